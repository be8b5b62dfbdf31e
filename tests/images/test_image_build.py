"""Build one role's image with functions/Dockerfile on this machine and run it.

No base image can be pulled here, so the test assembles one from Debian packages
(debootstrap from this machine's own apt sources, with python3 and python3-venv), starts
its own dockerd (vfs, no iptables, host network) and builds with BASE_IMAGE set to that
base. pip in the build reaches the package index through this machine's pip
configuration (index, certificate), copied into the base's /etc/pip.conf. Needs root;
installs docker.io and debootstrap with apt if they are missing. Fails, never skips,
when the engine cannot be set up. Run with `make test-images`.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cqrs_common.roles import ROLES_BY_NAME
from devtools.stack import wiring
from tests.support import NOWHERE

pytestmark = pytest.mark.images

ROOT = Path(__file__).resolve().parents[2]
ROLE = os.environ.get("IMAGE_TEST_ROLE", "dispatcher")
BASE_TAG = "cqrs-image-test-base:local"


def run(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr[-4000:]}"
        )
    # shown with -s (make test-images): where the minutes go
    print(f"[{time.monotonic() - started:6.1f}s] {' '.join(cmd[:3])}", flush=True)
    return result


def which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def ensure_tools() -> None:
    """docker.io (dockerd + CLI) and debootstrap, from apt when missing."""
    if os.geteuid() != 0:
        raise AssertionError("the image test needs root (dockerd, debootstrap); run it as root")
    if which("dockerd") and which("docker") and which("debootstrap"):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-q"], timeout=300, env=env)
    run(["apt-get", "install", "-y", "-q", "docker.io", "debootstrap"], timeout=600, env=env)
    missing = [n for n in ("dockerd", "docker", "debootstrap") if not which(n)]
    assert not missing, f"still missing after apt-get install: {missing}"


def apt_source() -> tuple[str, str]:
    """(mirror URI, suite) of this machine's main Debian archive, from its apt sources."""
    texts = [p.read_text() for p in Path("/etc/apt/sources.list.d").glob("*.sources")]
    for text in texts:  # deb822 stanzas
        for stanza in re.split(r"\n\s*\n", text):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.+)$", stanza, re.M))
            suites = [s for s in fields.get("Suites", "").split() if "-" not in s]
            if "deb" in fields.get("Types", "").split() and suites and "URIs" in fields:
                return fields["URIs"].split()[0], suites[0]
    legacy = Path("/etc/apt/sources.list")
    if legacy.is_file():
        for m in re.finditer(
            r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+([a-z]+)\s", legacy.read_text(), re.M
        ):
            return m.group(1), m.group(2)
    raise AssertionError("no Debian archive found in this machine's apt sources")


def host_pip_config() -> tuple[str, Path | None]:
    """This machine's pip settings that reach an index over the network, as a pip.conf text,
    and the CA file pip is told to trust (if any). Local paths (file://, find-links) stay out."""
    out = subprocess.run(
        ["python3", "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    settings: dict[str, str] = {}
    for line in out.splitlines():
        m = re.match(r"^[^.]+\.([\w-]+)='(.*)'$", line)
        if m:
            settings[m.group(1)] = m.group(2)
    for key in ("index-url", "extra-index-url", "trusted-host", "cert"):
        env = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if env:
            settings[key] = env
    conf = configparser.ConfigParser()
    conf["global"] = {}
    cert = Path(settings["cert"]) if settings.get("cert") else None
    if cert is not None and cert.is_file():
        conf["global"]["cert"] = "/etc/ssl/certs/host-pip-ca.pem"
    for key in ("index-url", "extra-index-url"):
        urls = [u for u in settings.get(key, "").split() if u.startswith(("http://", "https://"))]
        if urls:
            conf["global"][key] = " ".join(urls)
    if settings.get("trusted-host"):
        conf["global"]["trusted-host"] = settings["trusted-host"]
    lines = [f"{k} = {v}" for k, v in conf["global"].items()]
    return "[global]\n" + "\n".join(lines) + "\n", cert


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unmount_under(path: Path) -> None:
    """dockerd leaves mounts (its network namespace) under its exec root; release them."""
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(f"{path}/")), reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False)


def scratch_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A temporary directory, in memory (tmpfs) when the machine has room: the vfs storage
    driver copies the whole image for every build step, which is much faster in memory."""
    path = tmp_path_factory.mktemp(name)
    meminfo = Path("/proc/meminfo").read_text()
    available_kib = int(re.search(r"^MemAvailable:\s+(\d+)", meminfo, re.M).group(1))
    if available_kib > 8 * 1024 * 1024:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=6g,mode=0755", "tmpfs", str(path)],
            capture_output=True,
            check=False,
        )  # on failure the directory simply stays on disk
    return path


def release(path: Path) -> None:
    unmount_under(path)
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def docker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A dockerd of our own (vfs, no iptables, no bridge); yields the env to reach it."""
    ensure_tools()
    work = scratch_dir(tmp_path_factory, "dockerd")
    sock = work / "docker.sock"
    log = (work / "dockerd.log").open("w")
    daemon = subprocess.Popen(
        [which("dockerd") or "dockerd", "--storage-driver", "vfs", "--iptables=false",
         "--bridge=none", "--data-root", str(work / "data"), "--exec-root", str(work / "exec"),
         "--pidfile", str(work / "docker.pid"), "--host", f"unix://{sock}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    env = {**os.environ, "DOCKER_HOST": f"unix://{sock}", "DOCKER_BUILDKIT": "0"}
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(["docker", "info"], env=env, capture_output=True).returncode != 0:
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    "dockerd did not start:\n" + (work / "dockerd.log").read_text()[-4000:]
                )
            time.sleep(0.5)
        yield env
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()
        release(work)


@pytest.fixture(scope="module")
def base_image(docker: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """A minimal Debian with python3 and python3-venv, imported as an image."""
    mirror, suite = apt_source()
    scratch = scratch_dir(tmp_path_factory, "base")
    try:
        rootfs = scratch / "rootfs"
        run(
            ["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
             suite, str(rootfs), mirror],
            timeout=400,
        )  # fmt: skip
        pip_conf, cert = host_pip_config()
        (rootfs / "etc" / "pip.conf").write_text(pip_conf)
        if cert is not None and cert.is_file():
            shutil.copyfile(cert, rootfs / "etc" / "ssl" / "certs" / "host-pip-ca.pem")
        shutil.rmtree(rootfs / "var" / "cache" / "apt" / "archives", ignore_errors=True)
        tarball = scratch / "rootfs.tar"
        with tarfile.open(tarball, "w") as tar:
            tar.add(rootfs, arcname=".")
        run(["docker", "import", str(tarball), BASE_TAG], timeout=300, env=docker)
    finally:
        release(scratch)
    return BASE_TAG


@pytest.fixture(scope="module")
def image(docker: dict[str, str], base_image: str) -> str:
    tag = f"cqrs-{ROLE}:image-test"
    proxies = [
        f"--build-arg={k}={os.environ[k]}"
        for k in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
        if os.environ.get(k)
    ]
    run(
        ["docker", "build", "--network", "host", "-f", str(ROOT / "functions" / "Dockerfile"),
         "--build-arg", f"BASE_IMAGE={base_image}", "--build-arg", f"ROLE={ROLE}", *proxies,
         "-t", tag, str(ROOT / "functions")],
        timeout=420, env=docker,
    )  # fmt: skip
    return tag


def test_image_runs_the_role_and_answers_healthz(docker: dict[str, str], image: str) -> None:
    port = free_port()
    # The wiring a Knative Service gives the role (without it the role stops at start, naming
    # what is missing); every other role at the discard port: /healthz needs none of them.
    wired = wiring(ROLES_BY_NAME[ROLE], lambda _name: NOWHERE, "sqlite:////tmp/store.sqlite3")
    wired["PORT"] = str(port)
    started = run(
        ["docker", "run", "-d", "--network", "host",
         *(f"--env={k}={v}" for k, v in sorted(wired.items())), image],
        timeout=60, env=docker,
    )  # fmt: skip
    cid = started.stdout.strip()
    try:
        status, deadline = None, time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                status = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code
                if status == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        logs = subprocess.run(["docker", "logs", cid], env=docker, capture_output=True, text=True)
        assert status == 200, f"/healthz: {status}\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}"

        def exec_(*cmd: str) -> str:
            return run(["docker", "exec", cid, *cmd], timeout=30, env=docker).stdout

        # exec'd: gunicorn itself is PID 1, so SIGTERM from Kubernetes reaches it
        assert "gunicorn" in exec_("cat", "/proc/1/cmdline")
        assert exec_("id", "-u").strip() == "10001"
        # no test dependencies in the image
        probe = (
            "import importlib.util as u; print([m for m in ('pytest', 'ruff') if u.find_spec(m)])"
        )
        assert exec_("python3", "-c", probe).strip() == "[]"
    finally:
        subprocess.run(["docker", "rm", "-f", cid], env=docker, capture_output=True)

    config = json.loads(run(["docker", "inspect", image], timeout=30, env=docker).stdout)[0][
        "Config"
    ]
    assert config["User"] == "10001:10001"
    assert {"PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1", f"ROLE={ROLE}"} <= set(config["Env"])

"""Build Go binaries from pinned modules once per machine, and find modules in Go's module cache.

A binary is cached under ${XDG_CACHE_HOME:-~/.cache}/cqrs-shop/bin/<name>-<hash>, the hash
covering the module's go.mod, go.sum and *.go files and the build command. A fresh clone on the
same machine therefore reuses it without even calling `go`; after a change, Go's own build cache
keeps the rebuild short.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

# Stripped (-s -w): much smaller binaries, and the tests never debug them.
_BASE_LDFLAGS = ("-s", "-w")


def go_binary() -> str:
    """`go` on PATH, else the official tarball's place; a clear error when neither exists."""
    found = shutil.which("go")
    if found:
        return found
    fallback = Path("/usr/local/go/bin/go")
    if fallback.is_file() and os.access(fallback, os.X_OK):
        return str(fallback)
    raise RuntimeError(
        "Go is needed to build the upstream binaries (tools/upstream), but there is no `go` on "
        "PATH nor at /usr/local/go/bin/go: install Go (see tools/upstream/*/go.mod for the version)"
    )


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cqrs-shop" / "bin"


def _build_command(package: str, ldflags: Sequence[str], tags: Sequence[str]) -> list[str]:
    # -trimpath keeps module-cache paths out of the binary, so where the cache lives is irrelevant.
    command = ["build", "-trimpath", f"-ldflags={' '.join((*_BASE_LDFLAGS, *ldflags))}"]
    if tags:
        command.append(f"-tags={','.join(tags)}")
    return [*command, package]


def _with_cgo(command: list[str], cgo: bool | None) -> tuple[dict[str, str], list[str]]:
    """The build's environment, and its command with CGO_ENABLED in front when set, so that
    the setting is part of the hash."""
    env = dict(os.environ)
    if cgo is None:
        return env, command
    flag = "1" if cgo else "0"
    env["CGO_ENABLED"] = flag
    return env, [f"CGO_ENABLED={flag}", *command]


def _digest(module_dir: Path, command: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update("\0".join(command).encode())
    files = [module_dir / "go.mod", module_dir / "go.sum", *sorted(module_dir.rglob("*.go"))]
    for path in files:
        if path.is_file():
            content = path.read_bytes()
            if path.name == "go.mod":  # its comments (and // indirect) change nothing built
                lines = (line.split(b"//")[0].strip() for line in content.splitlines())
                content = b"\n".join(line for line in lines if line)
            h.update(b"\0" + path.relative_to(module_dir).as_posix().encode() + b"\0")
            h.update(content)
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder per binary at a time: a parallel test run waits instead of building twice."""
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build(
    module_dir: Path,
    package: str,
    name: str,
    *,
    ldflags: Sequence[str] = (),
    tags: Sequence[str] = (),
    cgo: bool | None = None,
    first_run_minutes: int | None = None,
) -> Path:
    """The binary of `package` as built from the Go module in `module_dir`, built on first use.

    `ldflags` are added to the linker flags (e.g. -X version stamps), `tags` are build tags, and
    `cgo` sets CGO_ENABLED (None: Go's default); all three are part of the hash. A binary that
    runs in an image with no C library (a static one) needs cgo=False.
    """
    command = _build_command(package, ldflags, tags)
    return _cached(module_dir.resolve(), command, name, cgo, first_run_minutes)


def module_dir(gomod_dir: Path, module: str) -> Path:
    """Where `module`, at the version the go.mod in `gomod_dir` selects, sits in the module cache
    (downloaded first if needed). Its files are read-only: read, never write."""
    done = subprocess.run(
        [go_binary(), "mod", "download", "-json", module],
        cwd=gomod_dir,
        capture_output=True,
        text=True,
    )
    # On failure -json still prints the module with an "Error" field, and exits 1.
    try:
        info = json.loads(done.stdout)
    except json.JSONDecodeError:
        info = {}
    if done.returncode != 0 or "Dir" not in info:
        reason = info.get("Error") or done.stderr.strip() or done.stdout.strip()
        raise RuntimeError(f"cannot download {module} as pinned in {gomod_dir}/go.mod: {reason}")
    return Path(info["Dir"])


def _module_source(gomod_dir: Path, module: str) -> Path:
    """The folder of `module` as the go.mod in `gomod_dir` selects it: its folder when a replace
    points it at one, else its place in the module cache (module_dir)."""
    done = subprocess.run(
        [go_binary(), "list", "-m", "-json", module], cwd=gomod_dir, capture_output=True, text=True
    )
    replace = (json.loads(done.stdout).get("Replace") or {}) if done.returncode == 0 else {}
    if replace.get("Dir") and not replace.get("Version"):
        return Path(replace["Dir"])
    return module_dir(gomod_dir, module)


def test_binary(
    module_dir: Path,
    package: str,
    name: str,
    *,
    tags: Sequence[str] = (),
    cgo: bool | None = None,
    first_run_minutes: int | None = None,
) -> Path:
    """The `go test -c` binary of `package` in the Go module in `module_dir`, built on first use
    and cached like build()'s binaries (its own command is in the hash).

    For a test suite that runs against something outside its process, such as a cluster: built
    once, it runs anywhere as `BINARY -test.v [-test.run=...] [the suite's own flags]`.
    """
    command = ["test", "-c", "-trimpath", f"-ldflags={' '.join(_BASE_LDFLAGS)}"]
    if tags:
        command.append(f"-tags={','.join(tags)}")
    return _cached(module_dir.resolve(), [*command, package], name, cgo, first_run_minutes)


def build_patched(
    module_dir: Path,
    package: str,
    name: str,
    *,
    patches: Mapping[str, Mapping[str, Path]],
    ldflags: Sequence[str] = (),
    tags: Sequence[str] = (),
    cgo: bool | None = None,
    first_run_minutes: int | None = None,
) -> Path:
    """build(), with files of some dependencies replaced or added: `patches` maps a module path
    to {path inside that module: our file}.

    For a dependency that cannot be built as published (one it imports is not served): each
    patched module is copied from the module cache (or the folder a replace points it at), at
    the version the go.mod in `module_dir` selects, into a temporary folder with our files put
    in, and the build uses a temporary go.mod (-modfile) that replaces the module with that
    copy. Nothing is written to the module cache or to `module_dir` (`go build -overlay` may not
    replace files in the module cache).
    Our files' contents are part of the hash.
    """
    module_dir = module_dir.resolve()
    keys = []
    for module, files in sorted(patches.items()):
        for inside, ours in sorted(files.items()):
            digest = hashlib.sha256(Path(ours).read_bytes()).hexdigest()
            keys.append(f"patch={module}/{inside}:{digest}")

    def prepare(work: Path) -> list[str]:
        modfile = work / "go.mod"
        shutil.copyfile(module_dir / "go.mod", modfile)
        shutil.copyfile(module_dir / "go.sum", work / "go.sum")
        for number, (module, files) in enumerate(sorted(patches.items())):
            copy = work / f"patched-{number}"
            # The module cache's files and folders are read-only: copy the contents only.
            shutil.copytree(_module_source(module_dir, module), copy, copy_function=shutil.copyfile)
            for folder in (copy, *(p for p in copy.rglob("*") if p.is_dir())):
                folder.chmod(0o755)
            if not (copy / "go.mod").exists():  # a module from before go.mod: a directory
                (copy / "go.mod").write_text(f"module {module}\n")  # replacement needs one
            for inside, ours in files.items():
                (copy / inside).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(ours, copy / inside)
            subprocess.run(
                [go_binary(), "mod", "edit", f"-modfile={modfile}", f"-replace={module}={copy}"],
                cwd=module_dir, check=True, capture_output=True,
            )  # fmt: skip
        return [f"-modfile={modfile}"]

    command = [*_build_command(package, ldflags, tags)[:-1], *keys, package]
    return _cached(module_dir, command, name, cgo, first_run_minutes, prepare=prepare)


def _cached(
    module_dir: Path,
    command: Sequence[str],
    name: str,
    cgo: bool | None,
    first_run_minutes: int | None,
    *,
    prepare: Callable[[Path], list[str]] | None = None,
) -> Path:
    """The binary that `go <command>` writes, cached under the hash of the module and command.

    Words of `command` that hold "=" but start with no "-" (patch=...) are for the hash only;
    `prepare`, given a temporary folder, returns extra flags for go (its files live as long as
    the build).
    """
    env, command = _with_cgo(command, cgo)
    target = cache_dir() / f"{name}-{_digest(module_dir, command)}"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{name}.lock"):
        if target.is_file():  # another process built it while we waited
            return target
        hint = f" (first run ~{first_run_minutes} min)" if first_run_minutes else ""
        print(f"building {name}{hint} ... -> {target}", file=sys.stderr, flush=True)
        for stale in target.parent.glob(f".{name}.tmp-*"):
            stale.unlink(missing_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.tmp-", dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            with tempfile.TemporaryDirectory(prefix=f"cqrs-gobuild-{name}-") as work:
                extra = prepare(Path(work)) if prepare else []
                go_args = [a for a in command if a.startswith("-") or "=" not in a]
                argv = [go_binary(), go_args[0], "-o", str(tmp), *extra, *go_args[1:]]
                done = subprocess.run(argv, cwd=module_dir, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                tail = "\n".join((done.stdout + done.stderr).splitlines()[-50:])
                raise RuntimeError(
                    f"building {name} failed: `{' '.join(argv)}` in {module_dir} exited "
                    f"{done.returncode}:\n{tail}"
                )
            tmp.chmod(0o755)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return target

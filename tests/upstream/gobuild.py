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
from collections.abc import Iterator, Sequence
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
        "Go is needed to build the tests' etcd and kube-apiserver, but there is no `go` on PATH "
        "nor at /usr/local/go/bin/go: install Go (see tools/upstream/*/go.mod for the version)"
    )


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cqrs-shop" / "bin"


def _build_command(package: str, ldflags: Sequence[str]) -> list[str]:
    # -trimpath keeps module-cache paths out of the binary, so where the cache lives is irrelevant.
    return ["build", "-trimpath", f"-ldflags={' '.join((*_BASE_LDFLAGS, *ldflags))}", package]


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
    first_run_minutes: int | None = None,
) -> Path:
    """The binary of `package` as built from the Go module in `module_dir`, built on first use.

    `ldflags` are added to the linker flags (e.g. -X version stamps); they are part of the hash.
    """
    module_dir = module_dir.resolve()
    command = _build_command(package, ldflags)
    target = cache_dir() / f"{name}-{_digest(module_dir, command)}"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{name}.lock"):
        if target.is_file():  # another process built it while we waited
            return target
        go = go_binary()
        hint = f" (first run ~{first_run_minutes} min)" if first_run_minutes else ""
        print(f"building {name}{hint} ... -> {target}", file=sys.stderr, flush=True)
        # Only the lock holder writes temporaries: any left are from a killed build.
        for stale in target.parent.glob(f".{name}.tmp-*"):
            stale.unlink(missing_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.tmp-", dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            # -o into the temp name, then rename: a killed build never leaves a half binary.
            argv = [go, command[0], "-o", str(tmp), *command[1:]]
            done = subprocess.run(argv, cwd=module_dir, capture_output=True, text=True)
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

"""Which local ports are taken, and by which process: so `make run` can say who holds its port.

Linux only (/proc/net/tcp and /proc/<pid>/fd); elsewhere the holder is simply not named.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from dataclasses import dataclass
from pathlib import Path

_LISTEN = "0A"  # TCP state in /proc/net/tcp


@dataclass(frozen=True)
class Holder:
    pid: int
    command: str

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.command})"


def port_is_free(port: int, host: str = "0.0.0.0") -> bool:
    """Whether a server could listen on `port` now (bound as gunicorn binds: SO_REUSEADDR)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def listening_inodes(port: int, proc: Path = Path("/proc")) -> set[str]:
    """Socket inodes listening on `port` (IPv4 and IPv6), from /proc/net/tcp{,6}."""
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in (proc / "net" / table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) < 10 or fields[3] != _LISTEN:
                    continue
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    return inodes


def holder_of(port: int, proc: Path = Path("/proc")) -> Holder | None:
    """The process listening on `port`, if /proc lets us see it (another user's may be hidden)."""
    inodes = {f"socket:[{inode}]" for inode in listening_inodes(port, proc)}
    if not inodes:
        return None
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return Holder(int(entry.name), _command(entry))
    return None


def _command(entry: Path) -> str:
    with contextlib.suppress(OSError):
        argv = (entry / "cmdline").read_bytes().split(b"\0")
        text = " ".join(arg.decode(errors="replace") for arg in argv if arg)
        if text:
            return text if len(text) <= 120 else text[:117] + "..."
    with contextlib.suppress(OSError):
        return (entry / "comm").read_text().strip()
    return "?"

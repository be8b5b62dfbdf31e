"""What the roles' processes cost: memory (RSS, PSS), CPU time, and the time to first answer."""

from __future__ import annotations

import http.client
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from devtools.stack import Stack

TICKS = os.sysconf("SC_CLK_TCK")


def _proc_stats() -> Iterator[tuple[int, list[str]]]:
    """(pid, the /proc/<pid>/stat fields after the command name) of every live process."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # the process is gone
            continue
        # Fields after the command name, which is in parentheses and may hold spaces.
        yield int(entry.name), stat[stat.rindex(")") + 2 :].split()


def group_pids(pgid: int) -> list[int]:
    """Every live process of a process group (a role: gunicorn master and its workers)."""
    return [pid for pid, fields in _proc_stats() if int(fields[2]) == pgid]


def memory_kib(pid: int) -> dict[str, int]:
    """Rss and Pss of one process from smaps_rollup, in KiB."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            values[key] = int(rest.split()[0])
    return values


def role_memory(stack: Stack) -> dict[str, dict[str, float]]:
    """Per role, MiB of RSS and PSS summed over its process group."""
    result = {}
    for role, process in stack.processes.items():
        rss = pss = 0
        pids = group_pids(process.pid)
        for pid in pids:
            try:
                mem = memory_kib(pid)
            except OSError:
                continue
            rss += mem.get("Rss", 0)
            pss += mem.get("Pss", 0)
        result[role] = {"rss_mib": rss / 1024, "pss_mib": pss / 1024, "processes": len(pids)}
    return result


def cpu_seconds(pgid: int) -> float:
    """User plus system CPU seconds used so far by the live processes of a group."""
    total = 0
    for pid in group_pids(pgid):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process, its reaped children and its live children (a PostgreSQL
    postmaster and its backends)."""
    total = 0
    for other, fields in _proc_stats():
        if other == pid:
            total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        elif int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


def role_cpu(stack: Stack) -> dict[str, float]:
    return {role: cpu_seconds(process.pid) for role, process in stack.processes.items()}


def healthz_ok(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def cold_start(stack: Stack, role: str, timeout: float = 30.0) -> float:
    """Seconds from spawning a role's gunicorn to its first 200 on /healthz; then stops it."""
    started = time.monotonic()
    stack.spawn(role)
    try:
        while time.monotonic() - started < timeout:
            if healthz_ok(stack.ports[role]):
                return time.monotonic() - started
            if stack.processes[role].poll() is not None:
                raise RuntimeError(f"{role} exited while starting")
            time.sleep(0.002)
        raise TimeoutError(f"{role} gave no 200 on /healthz within {timeout:.0f}s")
    finally:
        stack.signal(role, 15)
        try:
            stack.processes[role].wait(30)
        except subprocess.TimeoutExpired:
            stack.signal(role, 9)
            stack.processes[role].wait(5)

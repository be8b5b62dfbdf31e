"""`make run` (python -m devtools.stack): its roles stop with it, however it stops, and a busy
port stops it at once, naming the port and who holds it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from cqrs_common.roles import ROLES
from devtools.ports import holder_of, listening_inodes, port_is_free
from devtools.stack import FUNCTIONS, free_port
from tests.support import wait_for

pytestmark = pytest.mark.slow
# Generous bounds on a busy machine; the numbers measured are printed.
STOP_BOUND = 20.0


def six_free_ports() -> int:
    """A base port with the five after it free too (the roles' ports follow the dispatcher's)."""
    for _ in range(50):
        base = free_port()
        if base + 5 < 65536 and all(port_is_free(base + i) for i in range(6)):
            return base
    raise AssertionError("no six free ports in a row")


def start_run(data_dir: Path, base: int) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(FUNCTIONS / "shared")] + [str(FUNCTIONS / r.name) for r in ROLES]
        ),
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "devtools.stack", "--data-dir", str(data_dir),
         "--base-port", str(base)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def wait_started(run: subprocess.Popen[str], timeout: float = 180.0) -> str:
    seen, deadline = "", time.monotonic() + timeout
    assert run.stdout is not None
    while time.monotonic() < deadline:
        line = run.stdout.readline()
        if not line and run.poll() is not None:
            break
        seen += line
        if "Ctrl-C stops them all" in line:
            return seen
    raise AssertionError(f"make run did not start:\n{seen}")


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for a parent that may never reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def masters(base: int) -> list[int]:
    holders = [holder_of(base + i) for i in range(6)]
    assert all(holders), holders
    return [holder.pid for holder in holders if holder]


@pytest.mark.parametrize(
    "signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL],
    ids=["ctrl-c", "sigterm", "sighup", "sigkill"],
)  # fmt: skip
def test_every_role_stops_with_make_run(tmp_path: Path, signum: signal.Signals) -> None:
    base = six_free_ports()
    run = start_run(tmp_path / "var", base)
    try:
        wait_started(run)
        pids = masters(base)
        started = time.monotonic()
        run.send_signal(signum)
        while time.monotonic() - started < STOP_BOUND:
            listening = [base + i for i in range(6) if listening_inodes(base + i)]
            if not listening and not any(alive(pid) for pid in pids):
                break
            time.sleep(0.1)
        took = time.monotonic() - started
        left = [pid for pid in pids if alive(pid)]
        assert not left, f"roles still running {took:.1f}s after {signum.name}: {left}"
        assert not [base + i for i in range(6) if listening_inodes(base + i)]
        run.wait(timeout=STOP_BOUND)
        print(f"\nmake run, {signum.name}: every role gone {took:.1f}s later")
    finally:
        if run.poll() is None:
            run.kill()
        run.wait(timeout=10)
        for pid in [h.pid for h in (holder_of(base + i) for i in range(6)) if h]:
            os.kill(pid, signal.SIGKILL)


def test_a_busy_port_stops_make_run_at_once_naming_it_and_its_holder(tmp_path: Path) -> None:
    base = six_free_ports()
    with socket.socket() as squatter:
        squatter.bind(("0.0.0.0", base + 2))  # order-db's port
        squatter.listen()
        started = time.monotonic()
        run = start_run(tmp_path / "var", base)
        try:
            output, _ = run.communicate(timeout=60)
        finally:
            if run.poll() is None:
                run.kill()
        took = time.monotonic() - started
    assert run.returncode == 1, output
    assert f"port {base + 2} (cqrs-order-db) is in use by pid {os.getpid()}" in output, output
    assert not [base + i for i in (0, 1, 3, 4, 5) if listening_inodes(base + i)]
    print(f"\nbusy port: make run stopped {took:.1f}s after its start: {output.strip()}")


def test_make_run_keeps_each_roles_json_log_and_shows_one_line_per_request(
    tmp_path: Path,
) -> None:
    base = six_free_ports()
    run = start_run(tmp_path / "var", base)
    try:
        wait_started(run)
        lines: list[str] = []
        assert run.stdout is not None
        threading.Thread(target=lambda: lines.extend(run.stdout), daemon=True).start()
        order = {"product": "apple", "quantity": 1, "unitPrice": "1.00"}
        placed = requests.post(f"http://127.0.0.1:{base}/api/orders", json=order, timeout=10)
        assert placed.status_code == 202

        def shown() -> str | None:
            return next((x for x in list(lines) if "POST /api/orders 202" in x), None)

        line = wait_for(shown, timeout=15)
        # Compact: a time, the role, the request, its duration; no JSON on the terminal.
        assert re.match(r"^\d\d:\d\d:\d\d\.\d{3} dispatcher +POST /api/orders 202 [\d.]+ms", line)
        assert not any(x.startswith("{") for x in lines)
        for role in ROLES:  # every role's JSON lines, in a file of its own
            log = tmp_path / "var" / "log" / f"{role.name}.log"
            assert all(json.loads(x)["role"] in (role.name, role.service)
                       for x in log.read_text().splitlines() if x.startswith("{"))  # fmt: skip
        entries = [
            json.loads(x)
            for x in (tmp_path / "var" / "log" / "dispatcher.log").read_text().splitlines()
        ]
        assert any(e.get("path") == "/api/orders" and e.get("status") == 202 for e in entries)
    finally:
        run.send_signal(signal.SIGINT)
        run.wait(30)

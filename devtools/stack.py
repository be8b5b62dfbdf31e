"""All six roles on one machine under gunicorn, restarted when they die: what `make run` starts.

The roles die with their supervisor, however it ends: each holds the read end of a pipe whose
only write end is the supervisor's, and its gunicorn master stops itself when the pipe closes
(gunicorn_conf.on_starting). A busy port stops the start at once, naming the process holding it.
The tests and benchmarks start the same stack on free ports with throwaway stores.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import requests

from cqrs_common.roles import ORDER_DB, ROLES, ROLES_BY_NAME, SINK_BATCH, STATS_ORDER_DB, Role
from devtools import logs
from devtools.ports import holder_of, port_is_free

FUNCTIONS = Path(__file__).resolve().parents[1] / "functions"

# The environment variable naming the lifeline's file descriptor in each role.
LIFELINE_ENV = "CQRS_SUPERVISOR_FD"
# What wires a role to the others; the stack sets each from cqrs_common.roles.
WIRING_VARS = frozenset(
    {"PORT", "K_SINK", "SINK_BATCH_SIZE", "DATABASE_URL", LIFELINE_ENV}
    | {role.url_env for role in ROLES if role.url_env is not None}
)


def wiring(role: Role, url: Callable[[str], str], database_url: str | None) -> dict[str, str]:
    """A role's wiring on one machine (cqrs_common.roles): its port, the next role as K_SINK,
    the base URL of each role it calls, and its store."""
    env = {"PORT": url(role.name).rsplit(":", 1)[1]}
    if role.sink is not None:
        env["K_SINK"] = url(role.sink)
        env["SINK_BATCH_SIZE"] = str(SINK_BATCH)
    for peer in role.peers:
        env[str(ROLES_BY_NAME[peer].url_env)] = url(peer)
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    return env


class PortBusyError(RuntimeError):
    """A role's port is taken; the message names the port, the role and who holds it."""


# How long `make run` lets the roles finish in-flight requests when it stops.
STOP_GRACE = 5.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports() -> dict[str, int]:
    """A free loopback port for every role, all different: each is held until all are chosen
    (one free_port() after another may hand out the same port twice, and then one role answers
    on another's address)."""
    with contextlib.ExitStack() as held:
        ports = {}
        for role in ROLES:
            sock = held.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports[role.name] = sock.getsockname()[1]
        return ports


class Stack:
    """Six gunicorn processes wired to each other on loopback."""

    def __init__(
        self,
        data_dir: Path,
        ports: dict[str, int] | None = None,
        database_urls: dict[str, str] | None = None,
        extra_env: dict[str, str] | None = None,
        role_env: dict[str, dict[str, str]] | None = None,
        log_dir: Path | None = None,
        supervise: bool = True,
        site: Path | None = None,
    ) -> None:
        """`site`: a folder of packages the roles import before the environment's (a test of
        the roles on another gunicorn)."""
        self.data_dir = Path(data_dir).resolve()
        self.ports = ports or {role.name: role.port for role in ROLES}
        self.database_urls = {
            role.name: f"sqlite:///{self.data_dir / f'{role.store}.sqlite3'}"
            for role in ROLES
            if role.store is not None
        }
        self.database_urls.update(database_urls or {})
        self.extra_env = extra_env or {}
        self.role_env = role_env or {}  # on top of extra_env, for one role (its own token)
        self.log_dir = log_dir
        self.supervise = supervise
        self.site = site
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: dict[str, int] = {role.name: 0 for role in ROLES}
        self._logs: dict[str, IO[bytes]] = {}
        self._stopping = threading.Event()
        self._paused: set[str] = set()
        self._lock = threading.RLock()
        self._watcher: threading.Thread | None = None
        self._lifeline: tuple[int, int] | None = None  # (read, write) ends of the pipe

    def url(self, role: str) -> str:
        return f"http://127.0.0.1:{self.ports[role]}"

    def env_for(self, role: str) -> dict[str, str]:
        # Nothing of the caller's own wiring leaks in: every role gets exactly the stack's.
        inherited = {k: v for k, v in os.environ.items() if k not in WIRING_VARS}
        env = {
            **inherited,
            "PYTHONPATH": os.pathsep.join(
                ([str(self.site)] if self.site else [])
                + [str(FUNCTIONS / "shared")]
                + [str(FUNCTIONS / r.name) for r in ROLES]
            ),
            "PYTHONUNBUFFERED": "1",
            "CQRS_ROLE": role,
            **wiring(ROLES_BY_NAME[role], self.url, self.database_urls.get(role)),
            **self.extra_env,
            **self.role_env.get(role, {}),
        }
        if self._lifeline is not None:
            env[LIFELINE_ENV] = str(self._lifeline[0])
        return env

    # -- processes ---------------------------------------------------------------------------

    def spawn(self, role: str) -> None:
        package = ROLES_BY_NAME[role].package
        # Loopback only: on one machine, loopback is the boundary (internal routes such as
        # /replay take no credential). A container binds all interfaces (gunicorn_conf).
        command = [
            sys.executable, "-m", "gunicorn",
            "-c", "python:cqrs_common.gunicorn_conf",
            "--bind", f"127.0.0.1:{self.ports[role]}",
            f"{package}:create_app()",
        ]  # fmt: skip
        output: IO[bytes] | None = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            output = self._logs.get(role) or open(self.log_dir / f"{role}.log", "ab")  # noqa: SIM115
            self._logs[role] = output
        with self._lock:
            if self._lifeline is None:
                self._lifeline = os.pipe()
            # Its own process group, so a kill reaches the master and its workers alike.
            self.processes[role] = subprocess.Popen(
                command, env=self.env_for(role), stdout=output, stderr=output,
                start_new_session=True, pass_fds=(self._lifeline[0],),
            )  # fmt: skip

    def check_ports(self) -> None:
        """Raise PortBusyError naming the first role port something else listens on."""
        for role in ROLES:
            port = self.ports[role.name]
            if not port_is_free(port):
                holder = holder_of(port)
                who = f"by {holder}" if holder else "by a process this user cannot see"
                raise PortBusyError(f"port {port} ({role.service}) is in use {who}")

    def start(self, timeout: float = 60.0) -> Stack:
        self.check_ports()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for role in ROLES:
            self.spawn(role.name)
        self.wait_ready(timeout=timeout)
        if self.supervise:
            self._watcher = threading.Thread(target=self._watch, name="stack-watch", daemon=True)
            self._watcher.start()
        return self

    def wait_ready(self, roles: list[str] | None = None, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for role in roles or [r.name for r in ROLES]:
            while True:
                try:
                    if requests.get(f"{self.url(role)}/readyz", timeout=1).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                process = self.processes.get(role)
                if process is not None and process.poll() is not None and not self.supervise:
                    raise RuntimeError(f"{role} exited with {process.returncode} while starting")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{role} not ready after {timeout:.0f}s")
                time.sleep(0.05)

    def _watch(self) -> None:
        """Restart a role whose process died, as Kubernetes restarts a pod."""
        while not self._stopping.wait(0.2):
            with self._lock:
                for role, process in list(self.processes.items()):
                    if role in self._paused or process.poll() is None:
                        continue
                    self.restarts[role] += 1
                    print(f"stack: {role} exited ({process.returncode}); restarting", flush=True)
                    self.spawn(role)

    def signal(self, role: str, signum: int = signal.SIGKILL) -> None:
        """Send a signal to every process of a role (gunicorn master and workers)."""
        with self._lock:
            process = self.processes[role]
            with contextlib.suppress(ProcessLookupError):  # already gone
                os.killpg(process.pid, signum)

    def stop_role(self, role: str, timeout: float = 30.0) -> None:
        """Stop a role and keep it stopped until `resume_role`."""
        with self._lock:
            self._paused.add(role)
        self.signal(role, signal.SIGTERM)
        self._reap(role, timeout)

    def resume_role(self, role: str, wait: bool = True) -> None:
        with self._lock:
            self._paused.discard(role)
            if self.processes[role].poll() is not None:
                self.spawn(role)
        if wait:
            self.wait_ready([role])

    def _reap(self, role: str, timeout: float) -> None:
        process = self.processes[role]
        try:
            process.wait(max(0.0, timeout))
        except subprocess.TimeoutExpired:
            self.signal(role, signal.SIGKILL)
            process.wait(5)
        # Workers of a killed master notice and exit on their own; wait for the group to go.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join()
        with self._lock:
            for role in self.processes:
                self.signal(role, signal.SIGTERM)
            deadline = time.monotonic() + timeout  # one grace period for all, not one each
            for role in self.processes:
                self._reap(role, deadline - time.monotonic())
        for log in self._logs.values():
            log.close()
        self._logs.clear()
        if self._lifeline is not None:
            for fd in self._lifeline:
                os.close(fd)
            self._lifeline = None

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Stop(Exception):
    """SIGINT, SIGTERM or SIGHUP: stop every role."""


def _stop_on_signal(signum: int, frame: object) -> None:
    raise _Stop(signal.Signals(signum).name)


def _from_args(argv: list[str] | None) -> Stack:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="var", help="where the two SQLite stores live")
    parser.add_argument(
        "--base-port",
        type=int,
        default=ROLES_BY_NAME["dispatcher"].port,
        help="the dispatcher's port; the other roles follow as in the contract (8080-8085)",
    )
    args = parser.parse_args(argv)
    urls = {
        name: os.environ[var]
        for name, var in ((ORDER_DB.name, "ORDER_DB_DATABASE_URL"),
                          (STATS_ORDER_DB.name, "STATS_DB_DATABASE_URL"))
        if os.environ.get(var)
    }  # fmt: skip
    shift = args.base_port - ROLES_BY_NAME["dispatcher"].port
    ports = {role.name: role.port + shift for role in ROLES}
    data_dir = Path(args.data_dir)
    # Each role's JSON log in a file of its own; the terminal gets one readable line each.
    return Stack(data_dir, ports=ports, database_urls=urls, log_dir=data_dir / logs.LOG_SUBDIR)


def main(argv: list[str] | None = None) -> None:
    stack = _from_args(argv)
    try:
        stack.check_ports()
    except PortBusyError as exc:
        print(f"stack: cannot start: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    # Ctrl-C, SIGTERM and SIGHUP (the terminal closed) all stop every role; whatever else ends
    # this process (SIGKILL included) closes the lifeline, and the roles stop themselves. SIGINT
    # gets a handler of its own too: one started in the background by a script (`cmd &`)
    # inherits SIGINT ignored, and Python then leaves it so.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop_on_signal)
    assert stack.log_dir is not None
    stop_following = logs.start_follower([stack.log_dir / f"{r.name}.log" for r in ROLES])
    try:
        stack.start()
        print(f"stack: all six roles ready; open {stack.url('dispatcher')}/order", flush=True)
        for role in ROLES:
            print(f"stack:   {role.service:<22} {stack.url(role.name)}", flush=True)
        print(
            f"stack: logs in {stack.log_dir}/<role>.log (make logs); Ctrl-C stops them all",
            flush=True,
        )
        threading.Event().wait()
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        print("stack: stopping", flush=True)
        # A few seconds for in-flight requests, then SIGKILL: a stop is never left hanging.
        stack.stop(timeout=STOP_GRACE)
        stop_following.set()


if __name__ == "__main__":
    main()

"""A real Prometheus server for the tests: scrapes given targets every second, on a free loopback
port, with throwaway storage; it dies with the test (and with the test process)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests

from devtools.stack import free_port

BINARY = "/usr/bin/prometheus"  # the Debian package's
SCRAPE_INTERVAL = "1s"


def binary() -> str | None:
    """The prometheus executable, if this machine has one (Debian package `prometheus`)."""
    return shutil.which("prometheus") or (BINARY if Path(BINARY).exists() else None)


def _config(jobs: dict[str, Sequence[str]]) -> str:
    # JSON is YAML: no YAML writer needed, and no quoting surprises.
    import json

    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": [
            {
                "job_name": job,
                "scrape_interval": SCRAPE_INTERVAL,
                "scrape_timeout": SCRAPE_INTERVAL,
                "static_configs": [{"targets": list(targets)}],
            }
            for job, targets in jobs.items()
        ],
    }
    return json.dumps(config, indent=1)


class Prometheus:
    """`with Prometheus({"shop": ["127.0.0.1:8080"]}) as prom: prom.query("up")`."""

    def __init__(self, jobs: dict[str, Sequence[str]], executable: str | None = None) -> None:
        self.jobs = jobs
        self.executable = executable or binary()
        if self.executable is None:
            raise FileNotFoundError("prometheus is not installed (apt-get install prometheus)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir = tempfile.TemporaryDirectory(prefix="cqrs-prom-")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Prometheus:
        work = Path(self._dir.name)
        (work / "prometheus.yml").write_text(_config(self.jobs))
        self.log = work / "prometheus.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    self.executable,
                    f"--config.file={work / 'prometheus.yml'}",
                    f"--storage.tsdb.path={work / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                    "--web.enable-lifecycle",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=work,
                # Dies with us however we end: Linux sends it SIGTERM when its parent exits.
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.log.read_text()[-2000:]}")
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError("prometheus did not become ready")

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector (or matrix/scalar), as the HTTP API answers it."""
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        body = answer.json()
        if body.get("status") != "success":
            raise ValueError(f"query {promql!r} failed: {body.get('error')}")
        return body["data"]["result"]

    def value(self, promql: str) -> float | None:
        """The single number a query answers, or None when it answers nothing."""
        result = self.query(promql)
        if not result:
            return None
        if len(result) != 1:
            raise ValueError(f"{promql!r} answered {len(result)} series")
        return float(result[0]["value"][1])

    def targets_up(self) -> dict[str, str]:
        """Each scrape target's health: {"127.0.0.1:1234": "up"}."""
        answer = requests.get(f"{self.url}/api/v1/targets", timeout=5).json()
        return {t["labels"]["instance"]: t["health"] for t in answer["data"]["activeTargets"]}

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._dir.cleanup()

    def __enter__(self) -> Prometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _die_with_parent() -> None:
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

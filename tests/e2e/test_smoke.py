"""The smoke client passes against the live stack and fails loudly when the shop is not right."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import json_server

SMOKE = Path(__file__).with_name("smoke.py")


def run_smoke(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SMOKE), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
def test_smoke_passes_against_the_live_stack(live_stack) -> None:
    result = run_smoke("--base-url", live_stack.url("dispatcher"), "--timeout", "30")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    assert result.stdout.count("\nok   ") == 7
    assert "exact totals in /api/stats" in result.stdout
    # a second run compares with the totals it reads first, as on a cluster that has orders
    again = run_smoke("--base-url", live_stack.url("dispatcher"), "--timeout", "30")
    assert again.returncode == 0, again.stdout


def test_smoke_fails_when_nothing_answers() -> None:
    result = run_smoke("--base-url", "http://127.0.0.1:9", "--timeout", "2")
    assert result.returncode == 1
    assert "FAIL dispatcher answers GET /healthz" in result.stdout


def test_smoke_sends_the_host_header_and_fails_on_a_wrong_shop() -> None:
    seen: list[str | None] = []
    with json_server(b'{"products": {}}', lambda h: seen.append(h.headers.get("Host"))) as url:
        result = run_smoke("--base-url", url, "--host", "cqrs-dispatcher.cqrs.example.com")
    assert result.returncode == 1, result.stdout
    assert "ok   dispatcher answers GET /healthz" in result.stdout
    assert "FAIL read the totals before" in result.stdout
    assert seen and set(seen) == {"cqrs-dispatcher.cqrs.example.com"}

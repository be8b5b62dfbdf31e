"""`make run` installs only what the shop needs; the tests and the benchmark get their tools."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.support import make


def installs(target: str, venv: Path) -> list[str]:
    """The pip installs `make <target>` would run to bootstrap a fresh virtual environment."""
    result = make("-n", target, f"VENV={venv}")
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if "pip install" in line]


@pytest.mark.parametrize("target", ["run", "replay", "smoke"])
def test_running_the_shop_installs_only_its_own_packages(tmp_path: Path, target: str) -> None:
    lines = installs(target, tmp_path / "fresh-venv")
    assert [line for line in lines if line.rstrip().endswith("-e .")], lines
    assert not [line for line in lines if "[dev]" in line or "[test]" in line], lines


@pytest.mark.parametrize("target", ["test", "bench"])
def test_tests_and_bench_install_their_tools(tmp_path: Path, target: str) -> None:
    lines = installs(target, tmp_path / "fresh-venv")
    assert [line for line in lines if "[dev]" in line], lines

"""Running `make` and the scripts behind it the way a person does, and reading what they say."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

MAKE_ERROR = re.compile(r"^make(\[\d+\])?: \*\*\*")


def make(*args: str, env: dict[str, str] | None = None, timeout: float = 120):
    """`make -s <args>` in the repository; stdout and stderr as text."""
    return subprocess.run(
        ["make", "-s", "--no-print-directory", "-C", str(REPO), *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def own_lines(stderr: str) -> list[str]:
    """What the tool said, without make's own closing `make: *** [...] Error n` line."""
    return [line for line in stderr.splitlines() if line.strip() and not MAKE_ERROR.match(line)]


def python(*args: str, env: dict[str, str] | None = None, timeout: float = 120):
    """This interpreter with the roles' packages importable, as the Makefile runs it."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO / "functions" / "shared"), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def fake_tool(bindir: Path, name: str, script: str) -> Path:
    """An executable `name` in `bindir` that runs the given shell script."""
    bindir.mkdir(parents=True, exist_ok=True)
    tool = bindir / name
    tool.write_text("#!/bin/sh\n" + script)
    tool.chmod(0o755)
    return tool

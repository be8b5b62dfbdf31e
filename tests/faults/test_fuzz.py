"""The public API fuzzed from its own OpenAPI spec: no server error, every answer as specified."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import start_stack
from tests.faults.support import ZERO, order_log
from tests.support import expected_after, totals, wait_for

pytestmark = pytest.mark.slow
# A fixed seed keeps the run repeatable; FUZZ_SEED=<n> explores elsewhere.
SEED = os.environ.get("FUZZ_SEED", "20261126")
# Every check but the two about authentication, which this API does not have.
EXCLUDED_CHECKS = "ignored_auth,object_level_authorization"
# A schema-valid order may meet state the fuzzer made: its Idempotency-Key used before for
# another order is a 422 (the IETF idempotency-key draft), as Schemathesis already lets a 409
# pass. Its defaults otherwise (schemathesis/config/_checks.py).
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
"""


def test_the_dispatcher_keeps_its_openapi_spec_under_fuzzing(tmp_path: Path) -> None:
    # Its own stack: the orders the fuzzer places are real.
    stack = start_stack(tmp_path / "stack")
    try:
        base = stack.url("dispatcher")
        config = tmp_path / "schemathesis.toml"
        config.write_text(CONFIG)
        command = [
            sys.executable, "-c", "from schemathesis.cli import schemathesis; schemathesis()",
            "--config-file", str(config), "run", f"{base}/openapi.json",
            "--checks", "all", "--exclude-checks", EXCLUDED_CHECKS,
            "--phases", "examples,coverage,fuzzing,stateful",
            "--max-examples", "50", "--seed", SEED, "--workers", "2",
            "--request-timeout", "15", "--no-color",
            "--report", "junit", "--report-dir", str(tmp_path / "report"),
        ]  # fmt: skip
        run = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=tmp_path)
        summary = run.stdout[run.stdout.rfind("SUMMARY") :]
        print(f"\nschemathesis (seed {SEED}): {summary.strip().splitlines()[-1]}")
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
        assert "No issues found" in run.stdout
        # Whatever the fuzzer got accepted is stored once and counted once; nothing else is.
        accepted = [(o["product"], o["quantity"], o["unitPrice"]) for o in order_log(stack)]
        assert accepted, "the fuzzer placed no valid order"
        wait_for(lambda: totals(base) == expected_after(ZERO, accepted), timeout=60)
    finally:
        stack.stop()

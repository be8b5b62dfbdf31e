"""`make bench` in quick mode, end to end: the report is written and every number is there.

Speeds are not asserted: they depend on the machine and whatever else runs on it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_quick_bench_writes_a_complete_report(tmp_path: Path) -> None:
    out = tmp_path / "docs" / "benchmarks.md"
    workdir = tmp_path / "work"
    backends = os.environ.get("BENCH_BACKENDS", "sqlite,postgresql")
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out), "--workdir", str(workdir),
         "--backends", backends],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

    text = out.read_text()
    assert "<!-- bench:begin -->" in text and "<!-- bench:end -->" in text
    assert "Quick mode" in text
    png = out.with_suffix(".png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000

    results = json.loads((workdir / "results.json").read_text())
    assert [b["backend"] for b in results["backends"]] == backends.split(",")
    for backend in results["backends"]:
        levels = backend["levels"]
        assert [level["clients"] for level in levels] == [1, 8, 32]
        for phase in levels + backend["batches"]:
            assert phase["orders"] > 0 and phase["errors"] == 0
            for key in ("accepted_per_s", "p50_ms", "p99_ms", "lag_p50_ms", "lag_p99_ms",
                        "projected_per_s"):  # fmt: skip
                assert phase[key] > 0, (key, phase)
            assert phase["p50_ms"] <= phase["p99_ms"]
        assert backend["batches"][-1]["stored_after"] == 400
        assert all(d["projected_per_s"] > 0 for d in backend["drains"])
        assert (
            set(backend["cold_start_s"]) == set(backend["memory"]) and len(backend["memory"]) == 6
        )
        assert all(0 < s < 30 for s in backend["cold_start_s"].values())
        assert all(m["pss_mib"] > 1 and m["rss_mib"] >= m["pss_mib"] and m["processes"] == 2
                   for m in backend["memory"].values())  # fmt: skip

    # Each backend's tables in the Markdown carry the measured numbers, not placeholders.
    section_titles = re.findall(r"^### (SQLite|PostgreSQL)$", text, flags=re.M)
    assert len(section_titles) == len(results["backends"])
    assert "n/a" not in text
    assert re.search(r"\| 32 \| [\d,]+ \| [\d,]+ \| [\d.]+ \| [\d.]+ \|", text)

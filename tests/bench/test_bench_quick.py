"""`make bench` in quick mode, end to end: the report is written and every number is there.

Speeds are not asserted: they depend on the machine and whatever else runs on it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=bench-test", "-c", "user.email=bench@test",
         *args],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """This working tree (tracked and new files, as git sees them) committed into a repository
    of its own: the run's effect on `git status` is then its own, whatever else is edited here."""
    copy = tmp_path / "repo"
    files = git(REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for name in filter(None, files.split("\0")):
        source = REPO / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    git(copy, "init", "-q")
    git(copy, "add", "-A")
    git(copy, "commit", "-q", "-m", "as it was")
    return copy


def test_quick_bench_writes_a_complete_report_and_leaves_git_status_unchanged(
    checkout: Path,
) -> None:
    backends = os.environ.get("BENCH_BACKENDS", "sqlite,postgresql")
    env = {**os.environ, "PYTHONPATH": str(checkout / "functions" / "shared")}
    for name in ("BENCH_DIR", "BENCH_OUT", "BENCH_PUBLISH"):  # the defaults, as make bench has
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--backends", backends],
        cwd=checkout, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    # Nothing git sees changed: the report went under var/ (ignored); docs/ changes on purpose.
    assert git(checkout, "status", "--porcelain", "--untracked-files=all") == ""
    workdir = checkout / "var" / "bench"
    out = workdir / "benchmarks.md"
    # Each phase says what it does and how it went, stamped with the time since the start.
    progress = result.stderr.splitlines()
    assert [line for line in progress if re.match(r"\[ *\d+:\d\d\] 32 clients: ", line)]
    assert [line for line in progress if "accepted/s, p99" in line]
    assert [line for line in progress if "cold starts, run 1 of 1" in line]
    assert "make bench-report" in result.stderr

    text = out.read_text()
    assert "<!-- bench:begin -->" in text and "<!-- bench:end -->" in text
    assert "Quick mode" in text
    png = out.with_suffix(".png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000

    assert report_of(out)["summary"]
    results = json.loads((workdir / "results.json").read_text())
    assert results["machine"]["cpus"] == os.cpu_count()
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


def report_of(path: Path) -> dict[str, str]:
    text = path.read_text()
    return {"summary": text[text.index(report.SUMMARY_BEGIN) : text.index(report.SUMMARY_END)]}

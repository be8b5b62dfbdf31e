"""Where `make bench` writes, and how a run reaches docs/ (only on purpose). Fast: no stack."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import report, run
from cqrs_common.roles import ROLES
from tests.conftest import REPO

DOCS = tuple(REPO / "docs" / f"benchmarks.{ext}" for ext in ("md", "png", "json"))


def fingerprint() -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in DOCS}


def bench(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip


def phase(clients: int, stored_after: int, rate: float) -> dict[str, Any]:
    return {
        "name": f"{clients} clients", "clients": clients, "orders": 100, "errors": 0,
        "stored_after": stored_after, "accepted_per_s": rate, "p50_ms": 10.0 * clients,
        "p99_ms": 20.0 * clients, "lag_p50_ms": 30.0, "lag_p99_ms": 90.0,
        "projected_per_s": rate, "cpu_ms_per_order": {r.name: 2.0 for r in ROLES},
    }  # fmt: skip


def results(quick: bool = False) -> dict[str, Any]:
    """A results.json as `python -m bench` writes it, with made-up numbers."""
    backend = {
        "backend": "sqlite",
        "cold_start_s": {r.name: 0.5 for r in ROLES},
        "levels": [phase(1, 100, 80.0), phase(8, 200, 130.0), phase(32, 300, 140.0)],
        "batches": [phase(32, 2300, 135.0), phase(32, 4300, 137.0)],
        "drains": [{"stored_before": 300, "orders": 500, "projected_per_s": 240.0},
                   {"stored_before": 4300, "orders": 500, "projected_per_s": 250.0}],
        "memory": {r.name: {"rss_mib": 60.0, "pss_mib": 40.0, "processes": 2} for r in ROLES},
        "loadavg_before": [1.0, 1.0, 1.0], "loadavg_after": [2.0, 2.0, 2.0],
    }  # fmt: skip
    return {
        "quick": quick, "label": "", "date": "2026-11-27 10:00 UTC", "cpus": 2,
        "machine": {"cpus": 2, "cpu_model": "Test CPU", "memory_gib": 8.0,
                    "system": "Linux 6.1", "python": "3.11.7"},
        "backends": [backend], "duration_s": 60.0,
    }  # fmt: skip


def test_a_run_writes_under_var_bench_which_git_ignores() -> None:
    assert run.WORKDIR == REPO / "var" / "bench"
    ignored = subprocess.run(
        ["git", "-C", str(REPO), "check-ignore", "-q", "var/bench/benchmarks.md"], check=False
    )
    assert ignored.returncode == 0, "var/bench/ is not ignored by git"


def test_the_report_leads_with_speed_scaling_and_machine_then_the_targets(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    report.write(results(), out)
    text = out.read_text()
    summary = text[text.index(report.SUMMARY_BEGIN) : text.index(report.SUMMARY_END)]
    assert "2 CPUs (Test CPU), 8 GiB of memory, Linux 6.1, Python 3.11.7" in summary
    assert "80 / 130 / 140" in summary  # accepted per second at 1 / 8 / 32 clients
    assert "135 at 2,300 → 137 at 4,300 orders" in summary  # how it scales
    assert "240 at 300 → 250 at 4,300 orders" in summary
    assert text.index(report.SUMMARY_END) < text.index(report.BEGIN)
    run_part = text[text.index(report.BEGIN) :]
    assert run_part.index("accepted/s") < run_part.index("| target | wanted |")
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    # Rewriting keeps the prose around both generated parts.
    out.write_text(text.replace("## Latest run", "Some prose.\n\n## Latest run"))
    report.write(results(), out)
    assert "Some prose." in out.read_text()
    assert out.read_text().count(report.SUMMARY_BEGIN) == 1


def test_the_targets_stand_beside_the_published_run_and_postgresql_beside_sqlite(
    tmp_path: Path,
) -> None:
    current = results()
    postgresql = json.loads(json.dumps(current["backends"][0])) | {"backend": "postgresql"}
    postgresql["levels"][-1]["accepted_per_s"] = 70.0  # half of SQLite's 140
    current["backends"].append(postgresql)
    current["previous"] = run.comparable(results()) | {"date": "2026-01-01 00:00 UTC"}
    current["previous"]["backends"][0]["levels"][-1]["accepted_per_s"] = 99.0
    out = tmp_path / "benchmarks.md"
    report.write(current, out)
    text = out.read_text()
    assert "Compared with the run of 2026-01-01 00:00 UTC" in text
    assert "| target | wanted | previous run | this run | met |" in text
    assert "| accepted orders/s, 32 clients | >= 450 | 99 | 140 | **no** |" in text
    assert (
        "| accepted orders/s vs SQLite, 32 clients | within 30% | not measured | -50% | **no** |"
        in text
    )


def test_publishing_keeps_the_numbers_the_next_run_compares_with(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    run.publish(results(), out)
    published = json.loads(out.with_suffix(".json").read_text())
    assert published == run.comparable(results())
    assert run.previous_run(out.with_suffix(".json")) == published
    assert run.previous_run(tmp_path / "missing.json") is None


def test_report_only_writes_beside_its_results_not_in_docs(tmp_path: Path) -> None:
    before = fingerprint()
    (tmp_path / "results.json").write_text(json.dumps(results()))
    result = bench("--report-only", str(tmp_path / "results.json"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "benchmarks.md").exists() and (tmp_path / "benchmarks.png").exists()
    assert fingerprint() == before


def test_a_quick_run_is_never_published(tmp_path: Path) -> None:
    before = fingerprint()
    (tmp_path / "results.json").write_text(json.dumps(results(quick=True)))
    result = bench("--report-only", str(tmp_path / "results.json"), "--publish")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "bench: not publishing a quick run to benchmarks.md: its numbers are not comparable;"
        " run make bench (without BENCH_QUICK) first"
    ]
    # Refused up front, before a run of several minutes, not after it.
    workdir = tmp_path / "work"
    result = bench(BENCH_QUICK="1", BENCH_PUBLISH="1", BENCH_DIR=str(workdir))
    assert result.returncode == 1 and "not publishing a quick run" in result.stderr
    assert not workdir.exists()
    assert fingerprint() == before


def test_publishing_without_results_says_run_make_bench_first(tmp_path: Path) -> None:
    result = bench("--report-only", str(tmp_path / "results.json"), "--publish")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"bench: no results at {tmp_path / 'results.json'}: run make bench first"
    )

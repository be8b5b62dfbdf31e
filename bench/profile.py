"""Where the CPU goes: py-spy samples every role's worker while 32 clients place orders.

`python -m bench.profile [--backend sqlite|postgresql] [--seconds 15]` writes one collapsed-stack
file per role (flamegraph input) under var/bench/profile/ and prints, per role, the functions
with the most samples (inclusive) and where the time is spent (self).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from bench import load, procs
from bench.run import REPO, fresh_database, new_stack, postgres_server
from cqrs_common.roles import DISPATCHER, ORDER_DB, ROLES, STATS_ORDER_DB
from devtools.stack import Stack

PY_SPY = Path(sys.executable).with_name("py-spy")


def summarize(path: Path, top: int) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        # Idle threads (gunicorn's pool waiting for work) are not CPU: py-spy --idle is off.
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    lines = [f"  {total} samples"]
    lines += [f"  incl {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    lines += [f"  self {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    return "\n".join(lines)


def record(stack: Stack, workdir: Path, seconds: int) -> dict[str, tuple[Path, subprocess.Popen]]:
    """Start py-spy on every role's worker; per role, its output file and the recorder."""
    recorders = {}
    for role in ROLES:
        pids = procs.group_pids(stack.processes[role.name].pid)
        worker = max(pids)  # the worker is forked after the master
        out = workdir / f"{role.name}.txt"
        # --gil: only the thread holding the GIL, i.e. Python code on the CPU, not waits.
        command = [str(PY_SPY), "record", "--pid", str(worker), "--duration",
                   str(seconds), "--rate", "100", "--nonblocking", "--gil",
                   "--format", "raw", "--output", str(out)]  # fmt: skip
        recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        recorders[role.name] = (out, recorder)
    return recorders


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--backend", default="sqlite", choices=("sqlite", "postgresql"))
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    if not PY_SPY.exists():
        sys.exit("py-spy is missing: .venv/bin/pip install py-spy")
    workdir = REPO / "var" / "bench" / "profile"
    shutil.rmtree(workdir, ignore_errors=True)
    with contextlib.ExitStack() as cleanup:
        urls = None
        if args.backend == "postgresql":
            server, _ = cleanup.enter_context(postgres_server())
            urls = {ORDER_DB.name: fresh_database(server, "bench_profile_orders"),
                    STATS_ORDER_DB.name: fresh_database(server, "bench_profile_stats")}  # fmt: skip
        stack = new_stack(workdir / "stack", urls)
        stack.start()
        cleanup.callback(stack.stop)
        base = stack.url(DISPATCHER.name)
        load.place_orders(base, 300, 8, "warm-up")
        # 5 s longer than the recording, so the load does not end before the samples do.
        loader = threading.Thread(
            target=lambda: load.place_orders(base, args.orders, 32, "load", args.seconds + 5),
            daemon=True,
        )
        loader.start()
        recorders = record(stack, workdir, args.seconds)
        for _out, recorder in recorders.values():
            recorder.wait()
        loader.join()
        for role, (out, _) in recorders.items():
            print(f"== {role} ({out})")
            print(summarize(out, args.top) if out.exists() else "  no samples")


if __name__ == "__main__":
    main()

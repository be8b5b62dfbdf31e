"""Roles die, restart or go away under load; every accepted order is still counted exactly once."""

from __future__ import annotations

import itertools
import os
import re
import signal
import threading
import time
import uuid
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import pytest
import requests

from devtools.stack import Stack
from tests.conftest import start_stack
from tests.faults.support import (
    ZERO,
    log_lines,
    order_log,
    outbox,
    place_all,
    place_carefully,
    random_orders,
    restarted,
)
from tests.support import expected_after, totals, wait_for

pytestmark = pytest.mark.slow
KILLED = ["command-order", "order-db", "process-data", "stats-order-db"]


def group_size(pgid: int) -> int:
    """How many processes are in a process group (gunicorn's master and its workers)."""
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Fields after the command name (in parentheses): state, ppid, pgrp, ...
        if int(stat.rsplit(")", 1)[1].split()[2]) == pgid:
            count += 1
    return count


def test_sigkill_of_every_role_under_load_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path,
) -> None:
    stack = start_stack(tmp_path)
    try:
        base = stack.url("dispatcher")
        orders = random_orders(500, seed=500)
        placing = threading.Event()
        placing.set()
        kills: list[str] = []
        processes = 0

        def killer() -> None:
            # Each role in turn while orders flow, and at least one whole round.
            nonlocal processes
            time.sleep(0.5)
            for role in itertools.cycle(KILLED):
                if not placing.is_set() and len(kills) >= len(KILLED):
                    return
                restarts = stack.restarts[role]
                processes += group_size(stack.processes[role].pid)
                stack.signal(role, signal.SIGKILL)
                kills.append(role)
                wait_for(lambda role=role, n=restarts: stack.restarts[role] > n, timeout=10)
                stack.wait_ready([role], timeout=30)
                time.sleep(0.3)

        thread = threading.Thread(target=killer, name="killer")
        thread.start()
        started = time.monotonic()
        try:
            ids = place_all(base, orders, clients=8, timeout=180)
        finally:
            placing.clear()
            thread.join()
        placed = time.monotonic()
        expected = expected_after(ZERO, orders)
        wait_for(lambda: totals(base) == expected, timeout=90, interval=0.2)
        exact = time.monotonic()

        # The write log holds each accepted order once, and nothing else.
        log = order_log(stack)
        assert len(log) == len(orders)
        assert {o["orderId"] for o in log} == set(ids)
        # Nothing is left to deliver or parked.
        wait_for(lambda: outbox(stack, "pending")["counts"] == {"pending": 0, "parked": 0})
        assert totals(base) == expected
        assert set(kills) == set(KILLED)
        print(
            f"\ncrash test: {len(ids)} orders accepted in {placed - started:.1f}s by 8 clients;"
            f" {len(kills)} SIGKILLs ({processes} processes: "
            + ", ".join(f"{r} x{kills.count(r)}" for r in KILLED)
            + f"); totals exact {exact - placed:.1f}s after the last 202"
        )
    finally:
        stack.stop()


def test_a_full_restart_keeps_the_totals_and_relays_what_was_pending(tmp_path: Path) -> None:
    # Step 1: orders counted, then everything stops and starts on the same stores.
    stack = start_stack(tmp_path)
    try:
        base = stack.url("dispatcher")
        first = random_orders(40, seed=40)
        place_all(base, first, clients=4)
        expected = expected_after(ZERO, first)
        wait_for(lambda: totals(base) == expected)
    finally:
        stack.stop()
    stack = restarted(stack)
    try:
        assert totals(base) == expected
        # Step 2: the projector is away, so new orders wait in order-db's outbox...
        stack.stop_role("process-data")
        pending = random_orders(30, seed=30)
        place_all(base, pending, clients=4)
        assert outbox(stack, "pending")["counts"]["pending"] == len(pending)
        assert totals(base) == expected
    finally:
        stack.stop()
    # ...and after a full stop and start they are delivered, once each.
    stack = restarted(stack)
    try:
        started = time.monotonic()
        expected = expected_after(expected, pending)
        wait_for(lambda: totals(base) == expected, timeout=60)
        print(f"\nfull restart: {len(pending)} pending rows delivered"
              f" {time.monotonic() - started:.1f}s after the start")  # fmt: skip
        assert outbox(stack, "pending")["counts"] == {"pending": 0, "parked": 0}
        assert len(order_log(stack)) == len(first) + len(pending)
    finally:
        stack.stop()


@pytest.mark.parametrize("away", ["process-data", "stats-order-db"])
def test_events_wait_in_the_outbox_while_a_receiver_is_away(tmp_path: Path, away: str) -> None:
    stack = start_stack(tmp_path)
    try:
        base = stack.url("dispatcher")
        orders = random_orders(80, seed=100)
        expected = expected_after(ZERO, orders)

        def steady_client() -> None:
            # One careful client, an order every ~0.15 s: before, during and after the gap.
            deadline = time.monotonic() + 120
            with requests.Session() as session:
                for order in orders:
                    place_carefully(base, order, str(uuid.uuid4()), session, deadline)
                    time.sleep(0.15)

        placing = threading.Thread(target=steady_client, name="steady-client")
        placing.start()
        time.sleep(2)
        stack.stop_role(away)
        stopped = time.monotonic()
        time.sleep(1)
        shown = totals_or_none(base)
        time.sleep(max(0.0, 10 - (time.monotonic() - stopped)))
        held = outbox(stack, "pending")
        assert held["counts"]["pending"] > 0
        assert totals_or_none(base) == shown  # nothing new is counted while it is away
        attempts = [row["attempts"] for row in held["rows"]]
        stack.resume_role(away)
        back = time.monotonic()
        placing.join()
        wait_for(lambda: totals(base) == expected, timeout=60)
        print(f"\n{away} away {back - stopped:.1f}s: {held['counts']['pending']} rows held,"
              f" at most {max(attempts)} tries per row; all counted"
              f" {time.monotonic() - back:.1f}s after it came back")  # fmt: skip
        assert outbox(stack, "pending")["counts"] == {"pending": 0, "parked": 0}
        assert len(order_log(stack)) == len(orders)
        check_backoff_in_log(stack)
    finally:
        stack.stop()


def totals_or_none(base: str) -> dict | None:
    """The totals, or None while the read side is away."""
    try:
        return totals(base)
    except (requests.RequestException, ValueError, KeyError):
        return None


NEXT_TRY = re.compile(r"next try in ([0-9.]+)s")


def check_backoff_in_log(stack: Stack) -> None:
    """Backing off, not spinning: order-db logs each failed delivery with the delay it chose; the
    row is not tried again before that delay, and the delays grow."""
    tries: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for line in log_lines(stack, "order-db"):
        found = NEXT_TRY.search(line.get("message", ""))
        if found and line.get("ce_id"):
            moment = datetime.fromisoformat(line["timestamp"]).timestamp()
            tries[line["ce_id"]].append((moment, float(found.group(1))))
    assert tries, "no failed delivery was logged"
    most = max(len(t) for t in tries.values())
    # A relay woken by every new order (about 7 a second) and not backing off would pass 60.
    assert most <= 20, f"a row was tried {most} times in about ten seconds"
    for row in tries.values():
        for (at, delay), (next_at, _) in itertools.pairwise(sorted(row)):
            # A line is written after the store write that scheduled the row: allow for it.
            assert next_at - at >= delay - 0.3, (at, delay, next_at)
    assert max(delay for row in tries.values() for _, delay in row) >= 1.0, tries
    print(f"order-db logged {sum(map(len, tries.values()))} failed deliveries of"
          f" {len(tries)} rows, at most {most} per row")  # fmt: skip

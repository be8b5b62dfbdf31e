"""SIGTERM: a role turns not-ready, finishes what it is doing, then exits."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import requests

from tests.faults.support import ZERO, FaultyHop, outbox, place_all, restarted, start_rewired
from tests.support import expected_after, totals, wait_for

pytestmark = pytest.mark.slow


def test_sigterm_turns_not_ready_finishes_the_request_in_flight_then_exits(
    tmp_path: Path,
) -> None:
    # order-db's relay sends through a hop that takes 3 s per event; only a request relays.
    hop = FaultyHop()
    stack = start_rewired(tmp_path, sinks={"order-db": hop.url}, extra_env={"RELAY_ENABLED": "0"})
    try:
        hop.target, hop.delay = stack.url("process-data"), 3.0
        base, order_db = stack.url("dispatcher"), stack.url("order-db")
        order = ("apple", 2, "1.50")
        place_all(base, [order], clients=1)
        probe = requests.Session()  # a kept-alive connection, like a prober's
        assert probe.get(f"{order_db}/readyz", timeout=5).status_code == 200

        answer: dict[str, requests.Response] = {}
        relaying = threading.Thread(
            target=lambda: answer.update(r=requests.post(f"{order_db}/outbox/relay", timeout=30))
        )
        relaying.start()
        assert hop.arrived.wait(10), "the relay request never reached the hop"
        process = stack.processes["order-db"]
        stopping = threading.Thread(target=stack.stop_role, args=("order-db",))
        stopping.start()  # SIGTERM to the master and its worker
        time.sleep(0.3)
        try:
            ready = probe.get(f"{order_db}/readyz", timeout=2).status_code
        except requests.RequestException:
            ready = None  # no longer accepting at all: not ready either
        assert ready != 200
        while relaying.is_alive():  # up for as long as the request is in flight
            assert process.poll() is None, "exited with a request in flight"
            time.sleep(0.05)
        relaying.join()
        assert answer["r"].status_code == 200, answer["r"].text
        assert answer["r"].json()["sent"] == 1
        stopping.join()
        assert process.returncode == 0
        print(f"\nSIGTERM: /readyz answered {ready}; the request in flight finished; exit 0")
        expected = expected_after(ZERO, [order])
        wait_for(lambda: totals(base) == expected)
        stack.resume_role("order-db")
        # Deliveries that failed while process-data restarted are re-sent after their backoff;
        # they change no totals (already counted) and must leave nothing behind.
        wait_for(
            lambda: outbox(stack, "pending")["counts"] == {"pending": 0, "parked": 0}, timeout=10
        )
    finally:
        stack.stop()
        hop.close()


def test_a_relay_stopped_mid_batch_leaves_nothing_waiting_out_its_lease(tmp_path: Path) -> None:
    # A slow receiver (0.5 s per event) and a background relay sending a batch of 50, 8 at a time.
    hop = FaultyHop()
    stack = start_rewired(tmp_path, sinks={"order-db": hop.url})
    try:
        hop.target = stack.url("process-data")
        base = stack.url("dispatcher")
        first = [("pear", 1, "0.10")]
        place_all(base, first, clients=1)
        wait_for(lambda: totals(base) == expected_after(ZERO, first))
        hop.delay = 0.5
        hop.arrived.clear()
        orders = first + [("apple", 1, "0.50")] * 50
        place_all(base, orders[1:], clients=8)
        assert hop.arrived.wait(10)
        time.sleep(0.5)
        stack.stop()  # SIGTERM to every role in the middle of the batch
        hop.delay = 0.0
        stack = restarted(stack)
        started = time.monotonic()
        wait_for(lambda: totals(base) == expected_after(ZERO, orders), timeout=25)
        took = time.monotonic() - started
        print(f"\nstopped mid-batch: every order counted {took:.1f}s after the restart")
        assert took < 15, "rows waited for their claim's lease to run out"
        # Deliveries that failed while process-data restarted are re-sent after their backoff;
        # they change no totals (already counted) and must leave nothing behind.
        wait_for(
            lambda: outbox(stack, "pending")["counts"] == {"pending": 0, "parked": 0}, timeout=10
        )
    finally:
        stack.stop()
        hop.close()

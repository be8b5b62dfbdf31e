"""A hop that stalls or fails: one order is stored once, and the tries reaching the failing role
are the edge's tries, not their product across the hops."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from cqrs_common.deadline import BUDGET_HEADER
from tests.conftest import start_stack
from tests.faults.support import FaultyHop, order_log, place_all, start_rewired

pytestmark = pytest.mark.slow
ORDER = {"product": "pear", "quantity": 2, "unitPrice": "0.40"}
# Longer than a hop waits for an answer (10 s), so every hop gives up at least once meanwhile.
STALL = 12.0


def settled_count(stack, quiet: float = 3.0, timeout: float = 60.0) -> int:
    """How many orders the log holds once it has stopped growing for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    count, since = len(order_log(stack)), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = len(order_log(stack))
        if now != count:
            count, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return count
    raise AssertionError("the order log kept growing")


def test_a_keyless_order_sent_while_the_write_store_stalls_is_stored_once(
    tmp_path: Path,
) -> None:
    stack = start_stack(tmp_path)
    try:
        base = stack.url("dispatcher")
        place_all(base, [("apple", 1, "1.00")], clients=1)  # warm: every connection is up
        before = len(order_log(stack))
        answer: dict[str, object] = {}

        def place() -> None:
            try:  # no Idempotency-Key: the shop alone makes sure it is one order
                answer["r"] = requests.post(f"{base}/api/orders", json=ORDER, timeout=90)
            except requests.RequestException as exc:
                answer["e"] = exc

        stack.signal("order-db", signal.SIGSTOP)
        try:
            placing = threading.Thread(target=place)
            placing.start()
            time.sleep(STALL)
        finally:
            stack.signal("order-db", signal.SIGCONT)
        placing.join(timeout=120)
        stored = settled_count(stack) - before
        response = answer.get("r")
        status = getattr(response, "status_code", answer.get("e"))
        print(f"\nwrite store stalled {STALL:.0f}s: the client got {status};"
              f" {stored} order(s) stored for its one request")  # fmt: skip
        assert stored == 1
        if isinstance(response, requests.Response) and response.status_code == 202:
            assert response.json()["orderId"] == order_log(stack)[-1]["orderId"]
    finally:
        stack.stop()


def test_an_order_whose_callers_gave_up_is_not_stored_and_not_answered_503(
    tmp_path: Path,
) -> None:
    """order-db stopped for longer than the dispatcher's budget: it resumes with the order's
    request still queued in its backlog. Every caller has answered by then, so storing it would
    make a 503 a lie (a client retries a 503, and a keyless order is placed twice): order-db must
    refuse it, and the client's answer must say the outcome is unknown (504), not 503."""
    budget = 4.0  # REQUEST_TIMEOUT: the dispatcher's budget, and the most any hop is given
    stack = start_stack(tmp_path, extra_env={"REQUEST_TIMEOUT": str(budget)})
    try:
        base = stack.url("dispatcher")
        place_all(base, [("apple", 1, "1.00")], clients=1)  # warm: every connection is up
        before = len(order_log(stack))
        stack.signal("order-db", signal.SIGSTOP)
        try:
            started = time.monotonic()
            response = requests.post(f"{base}/api/orders", json=ORDER, timeout=30)
            took = time.monotonic() - started
            time.sleep(max(0.0, budget + 3 - took))  # past every hop's deadline, and the skew
        finally:
            stack.signal("order-db", signal.SIGCONT)
        stored = settled_count(stack) - before
        print(f"\nwrite store stopped past the budget: {response.status_code} after {took:.1f}s,"
              f" {stored} order(s) stored")  # fmt: skip
        assert response.status_code == 504, response.text
        assert stored == 0
    finally:
        stack.stop()


def test_a_failing_write_store_gets_the_edges_tries_not_their_product(tmp_path: Path) -> None:
    hop = FaultyHop()
    hop.status = 503  # order-db, as command-order sees it, is down
    stack = start_rewired(tmp_path, sinks={"command-order": hop.url})
    try:
        hop.target = stack.url("order-db")
        started = time.monotonic()
        response = requests.post(f"{stack.url('dispatcher')}/api/orders", json=ORDER, timeout=90)
        took = time.monotonic() - started
        assert response.status_code == 503, response.text
        subjects = {headers.get("ce-subject") for headers in hop.received}
        print(f"\norder-db down: {len(hop.received)} deliveries of {len(subjects)} order id(s)"
              f" for one request, answered 503 in {took:.1f}s")  # fmt: skip
        assert len(hop.received) <= 4  # the dispatcher's 4 tries, one hop each
        assert len(subjects) == 1
    finally:
        stack.stop()
        hop.close()


def test_every_hop_is_given_less_time_than_its_caller(tmp_path: Path) -> None:
    hop = FaultyHop()
    stack = start_rewired(tmp_path, sinks={"command-order": hop.url})
    try:
        hop.target = stack.url("order-db")
        response = requests.post(
            f"{stack.url('dispatcher')}/api/orders",
            json=ORDER,
            headers={BUDGET_HEADER: "8000"},
            timeout=30,
        )
        assert response.status_code == 202, response.text
        name = BUDGET_HEADER.lower()
        budgets = [int(h[name]) for h in hop.received if name in h]
        assert budgets and all(0 < b < 8000 * 0.9 for b in budgets), hop.received
    finally:
        stack.stop()
        hop.close()

"""Events delivered twice, out of order, poisoned, or replayed under traffic: totals stay exact."""

from __future__ import annotations

import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from cloudevents.core.bindings.http import to_binary_event, to_structured_event

from command_order import order_id_for
from cqrs_common import events
from cqrs_common.cloudevents_io import new_event
from cqrs_common.domain import Order, delta_for, now_iso
from devtools.stack import Stack
from tests.conftest import start_stack
from tests.faults.support import (
    ZERO,
    FaultyHop,
    log_lines,
    order_log,
    outbox,
    place_all,
    place_carefully,
    random_orders,
    start_rewired,
)
from tests.support import expected_after, totals, wait_for

pytestmark = pytest.mark.slow


def post_event(url: str, event: Any, structured: bool = False) -> requests.Response:
    message = to_structured_event(event) if structured else to_binary_event(event)
    return requests.post(url, headers=message.headers, data=message.body, timeout=30)


def as_orders(orders: list[tuple[str, int, str]]) -> list[Order]:
    return [Order(str(uuid.uuid4()), product, quantity, Decimal(price), now_iso())
            for product, quantity, price in orders]  # fmt: skip


def test_every_event_twice_and_shuffled_gives_the_same_totals(tmp_path: Path) -> None:
    stack = start_stack(tmp_path)
    try:
        base = stack.url("dispatcher")
        plain = random_orders(90, seed=90)
        orders = as_orders(plain)
        placed, recorded, deltas = orders[:30], orders[30:60], orders[60:]
        # Each fact enters the chain at one hop: order.placed at order-db, order.recorded at
        # process-data, stats.delta at stats-order-db.
        deliveries: list[tuple[str, Any]] = []

        def add(role: str, kind: str, producer: str, order: Order, data: dict[str, Any]) -> None:
            event = new_event(kind, events.source(producer), order.order_id, data)
            deliveries.append((stack.url(role), event))

        for order in placed:
            add("order-db", events.ORDER_PLACED, "command-order", order,
                events.order_to_data(order))  # fmt: skip
        for sequence, order in enumerate(recorded, start=1000):
            add("process-data", events.ORDER_RECORDED, "order-db", order,
                events.recorded_to_data(order, sequence))  # fmt: skip
        for order in deltas:
            add("stats-order-db", events.STATS_DELTA, "process-data", order,
                events.delta_to_data(delta_for(order)))  # fmt: skip
        # Twice each: the same event again (a broker's redelivery), and the same fact as a new
        # event (a producer that retried after a crash), in any order, binary or structured.
        twice = deliveries + [
            (url, new_event(e.get_type(), e.get_source(), e.get_subject(), e.get_data()))
            if i % 2 else (url, e)
            for i, (url, e) in enumerate(deliveries)
        ]  # fmt: skip
        random.Random(7).shuffle(twice)

        def deliver(item: tuple[int, tuple[str, Any]]) -> int:
            i, (url, event) = item
            return post_event(url, event, structured=i % 3 == 0).status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(deliver, enumerate(twice)))
        assert all(200 <= s < 300 for s in statuses), statuses
        expected = expected_after(ZERO, plain)
        wait_for(lambda: totals(base) == expected, timeout=60)
        log = order_log(stack)
        assert sorted(o["orderId"] for o in log) == sorted(o.order_id for o in placed)
        # A third round changes nothing either, once the relay has nothing left.
        with ThreadPoolExecutor(8) as pool:
            assert all(200 <= s < 300 for s in pool.map(deliver, enumerate(twice)))
        wait_for(lambda: outbox(stack, "pending")["counts"]["pending"] == 0)
        assert totals(base) == expected
        assert len(order_log(stack)) == len(placed)
    finally:
        stack.stop()


POISON = {
    "order-db": (events.ORDER_PLACED, {"orderId": "p-1", "product": "apple", "quantity": 0,
                                       "unitPrice": "1.00", "placedAt": now_iso()}),
    "process-data": (events.ORDER_RECORDED, {"orderId": "p-2", "product": "kiwi", "quantity": 1,
                                             "unitPrice": "1.00", "placedAt": now_iso(),
                                             "sequence": 1}),
    "stats-order-db": (events.STATS_DELTA, {"orderId": "p-3", "product": "pear", "quantity": 1,
                                            "amount": "-1.00"}),
}  # fmt: skip


def test_a_poison_event_is_refused_logged_and_blocks_nothing(tmp_path: Path) -> None:
    stack = start_stack(tmp_path)
    try:
        base = stack.url("dispatcher")
        poisoned: dict[str, str] = {}
        for role, (kind, data) in POISON.items():
            event = new_event(kind, events.source("test"), data["orderId"], data)
            for _ in range(2):  # redelivered: still refused, still no effect
                response = post_event(stack.url(role), event)
                assert response.status_code == 400, (role, response.text)
                assert response.headers["Content-Type"].startswith("application/problem+json")
            unknown = new_event("com.example.cqrs.nonsense", events.source("test"), "x", {})
            assert post_event(stack.url(role), unknown).status_code == 400
            poisoned[role] = event.get_id()
        # What comes after the poison goes through.
        orders = random_orders(20, seed=20)
        place_all(base, orders, clients=4)
        expected = expected_after(ZERO, orders)
        wait_for(lambda: totals(base) == expected)
        assert len(order_log(stack)) == len(orders)
        for role, ce_id in poisoned.items():
            lines = [line for line in log_lines(stack, role) if line.get("ce_id") == ce_id]
            assert lines, f"{role} logged nothing with ce_id {ce_id}"
            assert {line.get("status") for line in lines} >= {400}, lines
    finally:
        stack.stop()


def test_a_refused_outbox_row_is_parked_with_its_reason_and_retried_by_hand(
    tmp_path: Path,
) -> None:
    hop = FaultyHop()
    stack = start_rewired(tmp_path, sinks={"order-db": hop.url})
    try:
        hop.target = stack.url("process-data")
        base = stack.url("dispatcher")
        poison_key = f"poison-{uuid.uuid4()}"
        poison_id = order_id_for(poison_key)
        hop.refuse.add(poison_id)  # the hop refuses it for good, as a receiver with a bug would
        with requests.Session() as session:
            deadline = time.monotonic() + 60
            place_carefully(base, ("pear", 7, "3.00"), poison_key, session, deadline)
        orders = random_orders(20, seed=21)
        place_all(base, orders, clients=4)
        expected = expected_after(ZERO, orders)
        wait_for(lambda: totals(base) == expected)
        parked = wait_for(lambda: outbox(stack, "parked")["rows"])
        assert [row["subject"] for row in parked] == [poison_id]
        row = parked[0]
        assert row["attempts"] == 1 and "400" in row["lastError"], row
        logged = [line for line in log_lines(stack, "order-db")
                  if line.get("ce_id") == row["eventId"] and line.get("reason")]  # fmt: skip
        assert logged and "400" in logged[0]["reason"], logged
        # Not retried on its own: a few relay polls later it is still one attempt.
        threading.Event().wait(3)
        assert outbox(stack, "parked")["rows"][0]["attempts"] == 1
        tries = [h for h in hop.received if h.get("ce-subject") == poison_id]
        assert len(tries) == 1, tries
        assert totals(base) == expected
        # Fixed, then retried by hand: counted once.
        hop.refuse.clear()
        retried = requests.post(f"{stack.url('order-db')}/outbox/{row['id']}/retry", timeout=10)
        assert retried.status_code == 200, retried.text
        expected = expected_after(expected, [("pear", 7, "3.00")])
        wait_for(lambda: totals(base) == expected)
        assert outbox(stack, "parked")["counts"] == {"pending": 0, "parked": 0}
        again = requests.post(f"{stack.url('order-db')}/outbox/{row['id']}/retry", timeout=10)
        assert again.status_code == 404
    finally:
        stack.stop()
        hop.close()


def replay(stack: Stack) -> dict[str, int]:
    response = requests.post(f"{stack.url('process-data')}/replay", timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def test_replays_at_once_and_under_traffic_keep_the_totals_exact(tmp_path: Path) -> None:
    stack = start_stack(tmp_path)
    try:
        base = stack.url("dispatcher")
        first = random_orders(100, seed=101)
        place_all(base, first)
        more = random_orders(150, seed=150)
        results: list[dict[str, int]] = []
        replays = [threading.Thread(target=lambda: results.append(replay(stack)))
                   for _ in range(2)]  # fmt: skip
        placing = threading.Thread(target=lambda: place_all(base, more, clients=6))
        placing.start()
        for thread in replays:  # two at once, while orders flow
            thread.start()
        for thread in [*replays, placing]:
            thread.join()
        assert len(results) == 2 and all(r["replayed"] >= len(first) for r in results), results
        expected = expected_after(ZERO, first + more)
        wait_for(lambda: totals(base) == expected, timeout=60)
        assert replay(stack)["replayed"] == len(first) + len(more)
        assert totals(base) == expected
    finally:
        stack.stop()

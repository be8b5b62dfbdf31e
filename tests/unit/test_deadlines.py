"""An order's identity is made once, before any hop retries; budgets shrink hop by hop; only the
edge retries."""

from __future__ import annotations

import time

import pytest
from flask import Flask

from cqrs_common.client import Client, DeadlineExceededError
from cqrs_common.deadline import (
    BUDGET_HEADER,
    CLOCK_SKEW,
    DEADLINE_HEADER,
    ENVOY_HEADER,
    Deadline,
    outbound_headers,
)
from tests.unit.inprocess import Router, Shop, relay

ORDER = {"product": "apple", "quantity": 3, "unitPrice": "1.50"}


def place(apps: dict[str, Flask], **headers: str):
    return apps["dispatcher"].test_client().post("/api/orders", json=ORDER, headers=headers)


def hops(router: Router, role: str) -> list[dict[str, str]]:
    return [headers for seen, _, _, headers in router.seen if seen == role]


# -- the budget itself --------------------------------------------------------------------------


def test_a_budget_comes_from_the_caller_and_never_exceeds_the_roles_own() -> None:
    now = time.monotonic()
    assert Deadline.from_headers({}, 30, now).at == pytest.approx(now + 30)
    assert Deadline.from_headers({BUDGET_HEADER: "2500"}, 30, now).at == pytest.approx(now + 2.5)
    assert Deadline.from_headers({BUDGET_HEADER: "99000"}, 30, now).at == pytest.approx(now + 30)
    both = {BUDGET_HEADER: "5000", ENVOY_HEADER: "4000"}
    assert Deadline.from_headers(both, 30, now).at == pytest.approx(now + 4)
    for junk in ("-1", "1e3", "", "١٢", "9" * 40):  # ignored, never an error
        assert Deadline.from_headers({BUDGET_HEADER: junk}, 30, now).at == pytest.approx(now + 30)


def test_a_request_that_arrives_after_its_caller_gave_up_is_already_expired() -> None:
    # Sent with 5 s to live, 8 s ago (it sat in a stopped pod's backlog): the relative budget
    # alone would count 5 s from now.
    sent = time.time() - 8
    headers = {BUDGET_HEADER: "5000", DEADLINE_HEADER: str(int((sent + 5) * 1000))}
    assert Deadline.from_headers(headers, 30).expired()
    # Within the clock skew allowed between nodes, it still runs.
    close = {BUDGET_HEADER: "5000", DEADLINE_HEADER: str(int((time.time() - 0.5) * 1000))}
    assert 0 < Deadline.from_headers(close, 30).remaining() <= CLOSE_BOUND
    for junk in ("-1", "soon", "١٢", "9" * 40):  # ignored, never an error
        fresh = Deadline.from_headers({BUDGET_HEADER: "5000", DEADLINE_HEADER: junk}, 30)
        assert fresh.remaining() == pytest.approx(5, abs=0.1)


CLOSE_BOUND = CLOCK_SKEW - 0.5 + 0.1


def test_each_try_says_how_long_and_until_when() -> None:
    headers = outbound_headers(2.5)
    assert headers[BUDGET_HEADER] == "2500"
    until = int(headers[DEADLINE_HEADER]) / 1000
    assert until == pytest.approx(time.time() + 2.5, abs=0.1)


def test_each_hop_gets_less_than_its_caller() -> None:
    deadline = Deadline.after(10)
    assert 8.5 < deadline.for_call() < 9.1
    assert Deadline.after(0.04).for_call() < 0


def test_a_client_with_no_time_left_does_not_call() -> None:
    client = Client(retries=3)
    with pytest.raises(DeadlineExceededError):
        client.request("GET", "http://127.0.0.1:9/never", deadline=Deadline.after(0.01))


# -- through the chain ---------------------------------------------------------------------------


def test_the_budget_shrinks_from_hop_to_hop(shop: Shop) -> None:
    apps, router = shop.apps, shop.router
    assert place(apps).status_code == 202
    to_command = int(hops(router, "command-order")[0][BUDGET_HEADER])
    to_order_db = int(hops(router, "order-db")[0][BUDGET_HEADER])
    # The dispatcher's budget is 30 s; one try waits at most its read timeout (10 s).
    assert 0 < to_order_db < to_command <= 10_000


def test_a_callers_short_budget_is_passed_on(shop: Shop) -> None:
    apps, router = shop.apps, shop.router
    assert place(apps, **{BUDGET_HEADER: "3000"}).status_code == 202
    assert int(hops(router, "command-order")[0][BUDGET_HEADER]) < 3000
    assert int(hops(router, "order-db")[0][BUDGET_HEADER]) < 2700


def test_a_request_whose_budget_is_spent_is_refused_before_any_work(shop: Shop) -> None:
    apps, router = shop.apps, shop.router
    response = place(apps, **{BUDGET_HEADER: "0"})
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert response.headers["Retry-After"] == "1"
    assert not hops(router, "command-order")
    assert shop.orders.count() == 0
    # Probes answer whatever the header says.
    client = apps["dispatcher"].test_client()
    assert client.get("/healthz", headers={BUDGET_HEADER: "0"}).status_code == 200


def test_a_keyless_order_whose_answer_was_lost_is_stored_once(shop: Shop) -> None:
    apps, router = shop.apps, shop.router
    # command-order stores the order, then its answer to the dispatcher is lost: the
    # dispatcher tries again, with the same order id.
    router.lose.add("command-order")
    response = place(apps)
    assert response.status_code == 202, response.data
    tries = hops(router, "order-db")
    assert len(tries) == 2
    assert shop.orders.count() == 1
    store = shop.orders
    assert store.get(response.get_json()["orderId"]) is not None
    relay(apps)
    assert apps["dispatcher"].test_client().get("/api/stats").get_json()["ordersCounted"] == 1


def test_only_the_edge_retries(shop: Shop) -> None:
    apps, router = shop.apps, shop.router
    router.status["order-db"] = 503
    response = place(apps)
    assert response.status_code == 503
    # 4 tries by the dispatcher, 1 by command-order for each: 4 calls reach order-db, not 16.
    assert len(hops(router, "command-order")) == 4
    assert len(hops(router, "order-db")) == 4
    ids = {headers.get("ce-subject") for headers in hops(router, "order-db")}
    assert len(ids) == 1, ids  # one order, whichever try gets through


def test_a_hop_out_of_time_answers_504(shop: Shop) -> None:
    apps, router = shop.apps, shop.router
    response = (
        apps["command-order"]
        .test_client()
        .post("/orders", json={**ORDER, "orderId": "o-late"}, headers={BUDGET_HEADER: "40"})
    )
    assert response.status_code == 504, response.data
    assert response.mimetype == "application/problem+json"
    assert not hops(router, "order-db")

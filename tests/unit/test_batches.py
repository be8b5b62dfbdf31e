"""CloudEvents in batches: the relay sends order.recorded to process-data in batches, which sends
the deltas on to stats-order-db as one batch; each event keeps its own fate."""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask, jsonify, request

from cqrs_common import events
from cqrs_common.client import Client, UpstreamError
from cqrs_common.cloudevents_io import (
    BATCH_CONTENT_TYPE,
    Publisher,
    RejectedEventError,
    batch_body,
    new_event,
)
from cqrs_common.config import ConfigError, Settings
from cqrs_common.limits import MAX_BODY_BYTES
from cqrs_common.logs import JsonFormatter
from cqrs_common.receiver import batch_status
from tests.unit.inprocess import Router, Shop, host, relay

ORDER = {"product": "apple", "quantity": 3, "unitPrice": "1.50"}


def delta(order_id: str, quantity: int = 2, unit_price: str = "0.35", **data: Any):
    amount = str(quantity * Decimal(unit_price))
    payload = {"orderId": order_id, "product": "pear", "quantity": quantity,
               "unitPrice": unit_price, "amount": amount, **data}  # fmt: skip
    return new_event(events.STATS_DELTA, "/test", order_id, payload)


def post_batch(app: Flask, body: bytes | str):
    return app.test_client().post("/", data=body, content_type=BATCH_CONTENT_TYPE)


def place(shop: Shop, count: int) -> None:
    client = shop.apps["dispatcher"].test_client()
    for _ in range(count):
        assert client.post("/api/orders", json=ORDER).status_code == 202


def posts_to(shop: Shop, role: str) -> list[dict[str, str]]:
    """The headers of each request sent to `role`, names lower-cased."""
    return [
        {name.lower(): value for name, value in headers.items()}
        for seen, _, _, headers in shop.router.seen
        if seen == role
    ]


def test_a_batch_is_answered_event_by_event_and_counted_once(shop: Shop) -> None:
    app = shop.apps["stats-order-db"]
    batch = [
        delta("o-1"),
        delta("o-2", quantity=1, unit_price="1.10"),
        delta("o-3", amount="9.99"),  # forged amount: refused alone
        delta("o-1"),  # the same order again, in the same batch: counted once
        new_event(events.ORDER_RECORDED, "/test", "o-4", {}),  # a type it does not take
        delta("o-5", orderId="o-6"),  # subject and data disagree
    ]
    body = json.loads(batch_body(batch))
    body.append("not an event")
    response = post_batch(app, json.dumps(body))
    # The batch's own status is its first refusal's: a sender reading only that loses nothing.
    assert response.status_code == 400, response.data
    results = response.get_json()["results"]
    assert [r["status"] for r in results] == [200, 200, 400, 200, 400, 400, 400]
    assert [r["id"] for r in results[:6]] == [event.get_id() for event in batch]
    assert results[6]["id"] is None
    assert [r["body"].get("status") for r in results[:4]] == [
        "applied", "applied", 400, "duplicate",
    ]  # fmt: skip
    assert results[2]["body"]["type"] == "urn:cqrs:problem:validation"
    totals = shop.stats.totals()
    assert totals["ordersCounted"] == 2
    assert totals["products"]["pear"] == {"quantity": 3, "totalPrice": "1.80"}
    # Delivered again, whole: nothing is counted twice.
    again_answer = post_batch(app, batch_body(batch[:2]))
    assert again_answer.status_code == 200
    again = again_answer.get_json()["results"]
    assert [r["body"]["status"] for r in again] == ["duplicate", "duplicate"]
    assert shop.stats.totals()["ordersCounted"] == 2


@pytest.mark.parametrize("role", ["order-db", "process-data", "stats-order-db"])
def test_a_batch_that_is_not_an_array_is_a_400_and_an_empty_one_does_nothing(
    shop: Shop, role: str
) -> None:
    app = shop.apps[role]
    for body in ("{}", "not json", "[" * 30_000 + "]" * 30_000):
        response = post_batch(app, body)
        assert response.status_code == 400, (body[:10], response.data)
        assert response.mimetype == "application/problem+json"
    assert post_batch(app, "[]").get_json() == {"results": []}
    assert shop.orders.count() == 0
    assert shop.stats.totals()["ordersCounted"] == 0


def test_the_relay_sends_what_is_due_in_one_request_per_hop(
    shop: Shop, caplog: pytest.LogCaptureFixture
) -> None:
    place(shop, 5)
    shop.router.seen.clear()
    with caplog.at_level(logging.INFO, logger="cqrs"):
        assert relay(shop.apps) == {"sent": 5, "delayed": 0, "parked": 0}
    # The access line of a batch says how many events it held.
    (line,) = [r for r in caplog.records if r.name == "cqrs.process-data.access"]
    assert json.loads(JsonFormatter("process-data").format(line))["ce_batch"] == 5
    for role in ("process-data", "stats-order-db"):
        posts = posts_to(shop, role)
        assert len(posts) == 1, role
        assert posts[0]["content-type"] == BATCH_CONTENT_TYPE
    assert shop.stats.totals()["products"]["apple"] == {"quantity": 15, "totalPrice": "22.50"}


def test_one_due_row_goes_alone_in_binary_mode(shop: Shop) -> None:
    place(shop, 1)
    shop.router.seen.clear()
    assert relay(shop.apps)["sent"] == 1
    (post,) = posts_to(shop, "process-data")
    assert "ce-id" in post and post["content-type"] == "application/json"


def scripted_receiver(statuses: list[int], refuse_batches: bool = False) -> Flask:
    """A process-data stand-in: answers a batch with the given status per event, in order (or
    415 to any batch), and 200 to a single event. What it got is in app.config["got"]."""
    app = Flask("scripted")
    app.config["got"] = []

    @app.post("/")
    def receive():
        if request.content_type == BATCH_CONTENT_TYPE:
            if refuse_batches:
                return jsonify(title="no batches"), 415
            got = request.get_json()
            app.config["got"].append(len(got))
            return jsonify(results=[
                {"id": e["id"], "status": s, "body": {"detail": f"scripted {s}"}}
                for e, s in zip(got, statuses, strict=False)
            ])  # fmt: skip
        app.config["got"].append(1)
        return jsonify(status="ok"), 200

    return app


def test_each_row_of_a_batch_meets_its_own_fate(shop: Shop) -> None:
    place(shop, 4)
    shop.apps["process-data"] = scripted_receiver([200, 400, 503, 202])
    assert relay(shop.apps) == {"sent": 2, "delayed": 1, "parked": 1}
    (parked,) = shop.orders.outbox("parked")
    assert "scripted 400" in parked["lastError"]
    assert shop.orders.outbox_stats().pending == 1  # the 503: due again later


def test_a_receiver_that_takes_no_batches_gets_single_events(shop: Shop) -> None:
    place(shop, 3)
    stand_in = scripted_receiver([], refuse_batches=True)
    shop.apps["process-data"] = stand_in
    assert relay(shop.apps)["sent"] == 3
    assert stand_in.config["got"] == [1, 1, 1]
    place(shop, 2)
    shop.router.seen.clear()
    assert relay(shop.apps)["sent"] == 2
    # It said so a moment ago: no batch is tried again for a while.
    assert [h["content-type"] for h in posts_to(shop, "process-data")] == ["application/json"] * 2


def test_a_batch_that_fails_whole_is_retried_whole(shop: Shop) -> None:
    place(shop, 3)
    shop.router.down.add("process-data")
    assert relay(shop.apps) == {"sent": 0, "delayed": 3, "parked": 0}
    shop.router.down.clear()
    shop.router.status["process-data"] = 503
    assert relay(shop.apps) == {"sent": 0, "delayed": 0, "parked": 0}  # not due yet
    assert shop.orders.outbox_stats().pending == 3


def test_process_data_passes_each_deltas_fate_back(shop: Shop) -> None:
    place(shop, 3)
    shop.apps["stats-order-db"] = scripted_receiver([200, 400, 503])
    assert relay(shop.apps) == {"sent": 1, "delayed": 1, "parked": 1}


def test_a_batch_is_split_to_fit_the_body_limit() -> None:
    apps: dict[str, Flask] = {"sink": scripted_receiver([200] * 100)}
    router = Router(apps)
    publisher = Publisher(host("sink"), Client(transport=router), batch_size=100)
    big = [
        new_event(events.STATS_DELTA, "/t", f"o-{i}", {"orderId": f"o-{i}", "pad": "x" * 3000})
        for i in range(60)
    ]
    assert publisher.send_all(big) == [None] * 60
    got = apps["sink"].config["got"]
    assert sum(got) == 60 and len(got) >= 3
    assert all(count * 3000 < MAX_BODY_BYTES for count in got)


def test_a_whole_batch_refused_or_unreachable_is_every_events_outcome() -> None:
    router = Router({})
    publisher = Publisher(host("sink"), Client(transport=router), batch_size=10)
    two = [delta("o-1"), delta("o-2")]
    down = publisher.send_all(two)
    assert all(isinstance(o, UpstreamError) for o in down) and len(down) == 2
    router.apps["sink"] = Flask("sink")
    router.refuse.add("sink")
    refused = publisher.send_all(two)
    assert all(isinstance(o, RejectedEventError) and o.status == 400 for o in refused)


def test_a_batch_with_an_event_failed_for_now_is_a_503_to_send_again(shop: Shop) -> None:
    place(shop, 2)
    shop.router.down.add("stats-order-db")  # process-data's deltas cannot go on
    response = post_batch(shop.apps["process-data"], batch_body([
        new_event(events.ORDER_RECORDED, "/t", row["subject"], data)
        for row, data in zip(shop.orders.outbox("pending"), _recorded(shop), strict=True)
    ]))  # fmt: skip
    assert response.status_code == 503
    assert [r["status"] for r in response.get_json()["results"]] == [503, 503]
    assert batch_status([200, 400, 422]) == 400 and batch_status([422, 400]) == 422
    assert batch_status([200, 429, 400]) == 503 and batch_status([]) == 200


def _recorded(shop: Shop) -> list[dict[str, Any]]:
    client = shop.apps["order-db"].test_client()
    return client.get("/orders").get_json()["orders"]


def test_a_receiver_that_answers_a_batch_without_results_is_taken_at_its_status() -> None:
    sink = Flask("sink")
    sink.add_url_rule("/", "any", lambda: ("", 202), methods=["POST"])
    router = Router({"sink": sink})
    publisher = Publisher(host("sink"), Client(transport=router), batch_size=10)
    assert publisher.send_all([delta("o-1"), delta("o-2")]) == [None, None]
    router.status["sink"] = 503
    assert all(isinstance(o, UpstreamError) for o in publisher.send_all([delta("o-1")] * 2))


@pytest.mark.parametrize("value", ["0", "101", "ten", "-1"])
def test_the_batch_size_is_checked_at_start(value: str) -> None:
    env = {"K_SINK": "http://x", "DATABASE_URL": "sqlite:///x", "SINK_BATCH_SIZE": value}
    with pytest.raises(ConfigError, match="SINK_BATCH_SIZE"):
        Settings.from_env("order-db", env)
    assert Settings.from_env("order-db", {**env, "SINK_BATCH_SIZE": "7"}).sink_batch_size == 7

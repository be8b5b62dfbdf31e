"""Each app through Flask's test client, wired to the others in-process; events built by the SDK."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from cloudevents.core.bindings.http import to_binary_event, to_structured_event
from flask import Flask

from cqrs_common import events
from cqrs_common.cloudevents_io import new_event
from cqrs_common.domain import Order
from cqrs_common.lifecycle import DRAINING
from cqrs_common.limits import MAX_BODY_BYTES
from tests.unit.inprocess import Shop, relay

ORDER = {"product": "apple", "quantity": 3, "unitPrice": "1.50"}


def stats(apps: dict[str, Flask]) -> dict:
    return apps["dispatcher"].test_client().get("/api/stats").get_json()


def place(apps: dict[str, Flask], body: object = ORDER, **headers: str):
    return apps["dispatcher"].test_client().post("/api/orders", json=body, headers=headers)


def placed_event(order_id: str = "o-1", **data: object):
    payload = {"orderId": order_id, "product": "pear", "quantity": 2, "unitPrice": "0.35",
               "placedAt": "2026-11-26T06:00:00.000Z", **data}  # fmt: skip
    return new_event(events.ORDER_PLACED, "/test", order_id, payload)


def post_event(app: Flask, event, structured: bool = False):
    message = to_structured_event(event) if structured else to_binary_event(event)
    return app.test_client().post("/", headers=message.headers, data=message.body)


# -- the public API ---------------------------------------------------------------------------


def test_three_orders_of_ten_cents_show_exactly_thirty_cents(shop: Shop) -> None:
    apps = shop.apps
    for _ in range(3):
        assert (
            place(apps, {"product": "apple", "quantity": 1, "unitPrice": "0.10"}).status_code == 202
        )
    assert relay(apps)["sent"] == 3
    assert stats(apps)["products"]["apple"] == {"quantity": 3, "totalPrice": "0.30"}
    assert stats(apps)["ordersCounted"] == 3
    legacy = apps["dispatcher"].test_client().get("/order/orders")
    assert b'"totalPriceApple": 0.30' in legacy.data  # a JSON number, written exactly
    assert json.loads(legacy.data) == {
        "quantityApple": 3, "totalPriceApple": 0.3, "quantityPear": 0, "totalPricePear": 0,
    }  # fmt: skip


def test_accepted_order_has_an_id_a_location_and_becomes_counted(shop: Shop) -> None:
    apps = shop.apps
    response = place(apps)
    assert response.status_code == 202
    order_id = response.get_json()["orderId"]
    assert response.get_json()["status"] == "accepted"
    assert response.headers["Location"] == f"/api/orders/{order_id}"
    client = apps["dispatcher"].test_client()
    assert client.get(f"/api/orders/{order_id}").get_json()["status"] == "pending"
    relay(apps)
    assert client.get(f"/api/orders/{order_id}").get_json()["status"] == "counted"


def test_idempotency_key_stores_a_retried_order_once(shop: Shop) -> None:
    apps = shop.apps
    first = place(apps, **{"Idempotency-Key": "checkout-42"})
    second = place(apps, **{"Idempotency-Key": "checkout-42"})
    assert first.get_json()["orderId"] == second.get_json()["orderId"]
    assert shop.orders.count() == 1
    relay(apps)
    assert stats(apps)["products"]["apple"] == {"quantity": 3, "totalPrice": "4.50"}


def test_legacy_form_post_places_an_order(shop: Shop) -> None:
    apps = shop.apps
    client = apps["dispatcher"].test_client()
    response = client.post("/order", data={"product": "pear", "quantity": "2", "unitPrice": "0.5"})
    assert response.status_code == 202
    response = client.post("/order", json={"product": "pear", "quantity": 1, "unitPrice": 1})
    assert response.status_code == 202
    relay(apps)
    assert stats(apps)["products"]["pear"] == {"quantity": 3, "totalPrice": "2.00"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"product": "kiwi", "quantity": 1, "unitPrice": "1"}, "product"),
        ({"product": "apple", "quantity": 0, "unitPrice": "1"}, "quantity"),
        ({"product": "apple", "quantity": 1.5, "unitPrice": "1"}, "quantity"),
        ({"product": "apple", "quantity": "3", "unitPrice": "-1"}, "unitPrice"),
        ({"product": "apple", "quantity": 1, "unitPrice": "1.234"}, "unitPrice"),
        ({"product": "apple", "quantity": 1}, "unitPrice"),
        (["apple"], "body"),
    ],
)
def test_bad_orders_are_refused_with_the_field_and_change_nothing(
    shop: Shop, body: object, field: str
) -> None:
    apps, router = shop.apps, shop.router
    response = place(apps, body)
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert problem["status"] == 400
    assert field in [p["name"] for p in problem["invalid-params"]]
    assert shop.orders.count() == 0
    assert not [hop for hop in router.seen if hop[0] == "command-order"]


def test_malformed_json_is_a_400(shop: Shop) -> None:
    apps = shop.apps
    response = (
        apps["dispatcher"]
        .test_client()
        .post("/api/orders", data=b"{not json", content_type="application/json")
    )
    assert response.status_code == 400
    assert response.get_json()["invalid-params"][0]["name"] == "body"


def test_wrong_content_type_is_a_415(shop: Shop) -> None:
    apps = shop.apps
    client = apps["dispatcher"].test_client()
    for path in ("/api/orders", "/order"):
        response = client.post(path, data="product=apple", content_type="text/plain")
        assert response.status_code == 415
        assert response.mimetype == "application/problem+json"
    assert shop.orders.count() == 0


def test_a_body_past_64_kib_is_a_413(shop: Shop) -> None:
    apps = shop.apps
    big = json.dumps({**ORDER, "padding": "x" * MAX_BODY_BYTES})
    response = (
        apps["dispatcher"]
        .test_client()
        .post("/api/orders", data=big, content_type="application/json")
    )
    assert response.status_code == 413
    assert response.mimetype == "application/problem+json"
    assert shop.orders.count() == 0


def test_unknown_route_and_method_are_problems(shop: Shop) -> None:
    apps = shop.apps
    client = apps["dispatcher"].test_client()
    assert client.get("/nope").status_code == 404
    response = client.delete("/api/orders")
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]


def test_read_side_down_is_a_503_not_a_500(shop: Shop) -> None:
    apps, router = shop.apps, shop.router
    router.down.add("query-order")
    response = apps["dispatcher"].test_client().get("/api/stats")
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"


def test_write_side_down_is_a_503_and_stores_nothing(shop: Shop) -> None:
    apps, router = shop.apps, shop.router
    router.down.add("order-db")
    assert place(apps).status_code == 503
    router.down.clear()
    assert shop.orders.count() == 0


def test_trace_headers_are_passed_on(shop: Shop) -> None:
    apps, router = shop.apps, shop.router
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    place(apps, traceparent=trace)
    hops = {role: headers for role, _, _, headers in router.seen}
    assert hops["command-order"]["traceparent"] == trace
    assert hops["order-db"]["traceparent"] == trace


def test_openapi_describes_every_public_route(shop: Shop) -> None:
    apps = shop.apps
    spec = apps["dispatcher"].test_client().get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    for path in ("/order", "/order/orders", "/api/orders", "/api/orders/{orderId}",
                 "/api/stats", "/healthz", "/readyz"):  # fmt: skip
        assert path in spec["paths"], path


def test_every_role_is_alive_and_ready(shop: Shop) -> None:
    apps = shop.apps
    for role, app in apps.items():
        client = app.test_client()
        assert client.get("/healthz").status_code == 200, role
        assert client.get("/readyz").status_code == 200, role
    DRAINING.set()
    try:
        assert apps["order-db"].test_client().get("/readyz").status_code == 503
    finally:
        DRAINING.clear()


# -- events -----------------------------------------------------------------------------------


@pytest.mark.parametrize("structured", [False, True], ids=["binary", "structured"])
def test_order_db_records_once_in_both_content_modes(shop: Shop, structured: bool) -> None:
    apps = shop.apps
    first = post_event(apps["order-db"], placed_event(), structured)
    again = post_event(apps["order-db"], placed_event(), structured)
    assert (first.status_code, first.get_json()["status"]) == (201, "recorded")
    assert (again.status_code, again.get_json()["status"]) == (200, "duplicate")
    store = shop.orders
    assert store.count() == 1
    assert store.outbox_counts()["pending"] == 1
    assert relay(apps)["sent"] == 1
    assert stats(apps)["products"]["pear"] == {"quantity": 2, "totalPrice": "0.70"}


@pytest.mark.parametrize("structured", [False, True], ids=["binary", "structured"])
def test_stats_db_applies_a_delta_exactly_once(shop: Shop, structured: bool) -> None:
    apps = shop.apps
    data = {
        "orderId": "o-9",
        "product": "apple",
        "quantity": 4,
        "unitPrice": "0.10",
        "amount": "0.40",
    }
    event = new_event(events.STATS_DELTA, "/test", "o-9", data)
    for _ in range(3):
        assert post_event(apps["stats-order-db"], event, structured).status_code == 200
    assert stats(apps)["products"]["apple"] == {"quantity": 4, "totalPrice": "0.40"}
    assert stats(apps)["ordersCounted"] == 1


@pytest.mark.parametrize(
    ("role", "event"),
    [
        ("order-db", new_event("com.example.other", "/test", "x", {})),
        ("order-db", placed_event(quantity=0)),
        ("order-db", placed_event(unitPrice="1.001")),
        ("order-db", placed_event(orderId="o-2")),  # subject and data disagree
        ("process-data", new_event(events.ORDER_PLACED, "/test", "x", {})),
        ("process-data", new_event(events.ORDER_RECORDED, "/test", "o-1", {"orderId": "o-1"})),
        ("stats-order-db", new_event(events.STATS_DELTA, "/test", "o-1", {"amount": "x"})),
        # A forged delta: its amount is not quantity x unitPrice (or has no unit price at all).
        (
            "stats-order-db",
            new_event(
                events.STATS_DELTA,
                "/test",
                "o-1",
                {
                    "orderId": "o-1",
                    "product": "apple",
                    "quantity": 1,
                    "unitPrice": "1.00",
                    "amount": "1000.00",
                },
            ),
        ),
        (
            "stats-order-db",
            new_event(
                events.STATS_DELTA,
                "/test",
                "o-1",
                {"orderId": "o-1", "product": "apple", "quantity": 1, "amount": "1.00"},
            ),
        ),
        ("stats-order-db", new_event(events.ORDER_RECORDED, "/test", "o-1", {})),
    ],
)
def test_unknown_or_invalid_events_are_a_400_and_change_nothing(
    shop: Shop, role: str, event
) -> None:
    apps = shop.apps
    response = post_event(apps[role], event)
    assert response.status_code == 400, response.data
    assert response.mimetype == "application/problem+json"
    assert shop.orders.count() == 0
    assert stats(apps)["ordersCounted"] == 0


def test_a_request_that_is_not_a_cloudevent_is_a_400(shop: Shop) -> None:
    apps = shop.apps
    for role in ("order-db", "process-data", "stats-order-db"):
        client = apps[role].test_client()
        assert client.post("/", json={"orderId": "o-1"}).status_code == 400
        assert client.post("/", data=b"\xff", headers={"ce-specversion": "1.0"}).status_code == 400


def test_relay_backs_off_while_downstream_is_away_then_delivers(shop: Shop) -> None:
    apps, router = shop.apps, shop.router
    place(apps)
    router.down.add("process-data")
    assert relay(apps) == {"sent": 0, "delayed": 1, "parked": 0}
    assert relay(apps) == {"sent": 0, "delayed": 0, "parked": 0}  # not due yet: no spinning
    store = shop.orders
    pending = store.outbox("pending")
    assert pending[0]["attempts"] == 1 and "process-data" in pending[0]["lastError"]
    router.down.clear()
    with store.db.transaction() as tx:  # make the row due now instead of waiting out the backoff
        tx.execute("UPDATE outbox SET next_attempt_at = 0")
    assert relay(apps)["sent"] == 1
    assert stats(apps)["ordersCounted"] == 1


def test_a_refused_event_is_parked_with_its_reason_and_can_be_retried(shop: Shop) -> None:
    apps, router = shop.apps, shop.router
    place(apps)
    router.refuse.add("process-data")
    assert relay(apps)["parked"] == 1
    client = apps["order-db"].test_client()
    parked = client.get("/outbox?status=parked").get_json()
    assert parked["counts"]["parked"] == 1
    row = parked["rows"][0]
    assert "400" in row["lastError"]
    router.refuse.clear()
    assert relay(apps)["sent"] == 0  # parked rows are not retried on their own
    assert client.post(f"/outbox/{row['id']}/retry").status_code == 200
    assert relay(apps)["sent"] == 1
    assert stats(apps)["ordersCounted"] == 1
    assert client.post(f"/outbox/{row['id']}/retry").status_code == 404


def test_a_ping_wakes_the_relay(shop: Shop) -> None:
    apps = shop.apps
    place(apps)
    ping = new_event(events.PING, "/apis/v1/namespaces/cqrs/pingsources/relay", "ping", {})
    response = post_event(apps["order-db"], ping)
    assert response.get_json()["sent"] == 1
    assert stats(apps)["ordersCounted"] == 1


def test_replay_rebuilds_the_read_store_without_double_counting(shop: Shop) -> None:
    apps, router = shop.apps, shop.router
    orders = [("apple", 2, "0.10"), ("pear", 1, "2.25"), ("apple", 5, "0.33")]
    for product, quantity, price in orders:
        place(apps, {"product": product, "quantity": quantity, "unitPrice": price})
    router.down.add("stats-order-db")
    relay(apps)  # every delivery fails: the read store has nothing
    router.down.clear()
    assert stats(apps)["ordersCounted"] == 0
    replayed = apps["process-data"].test_client().post("/replay").get_json()
    assert replayed["replayed"] == 3
    expected = {"apple": {"quantity": 7, "totalPrice": "1.85"},
                "pear": {"quantity": 1, "totalPrice": "2.25"}}  # fmt: skip
    assert stats(apps)["products"] == expected
    # The outbox still delivers its rows later, and a second replay runs: nothing counts twice.
    store = shop.orders
    with store.db.transaction() as tx:
        tx.execute("UPDATE outbox SET next_attempt_at = 0")
    assert relay(apps)["sent"] == 3
    apps["process-data"].test_client().post("/replay")
    assert stats(apps)["products"] == expected
    assert stats(apps)["ordersCounted"] == 3


def test_replay_pages_through_a_long_log(shop: Shop, monkeypatch: pytest.MonkeyPatch) -> None:
    import process_data

    apps = shop.apps
    monkeypatch.setattr(process_data, "REPLAY_PAGE", 2)
    store = shop.orders
    for n in range(5):
        store.record(Order(f"o-{n}", "apple", 1, Decimal("1.00"), "2026-11-26T06:00:00Z"))
    result = apps["process-data"].test_client().post("/replay").get_json()
    assert result == {"replayed": 5, "lastSequence": 5}
    assert stats(apps)["products"]["apple"] == {"quantity": 5, "totalPrice": "5.00"}


def test_the_page_form_key_makes_a_double_submit_one_order(shop: Shop) -> None:
    apps = shop.apps
    client = apps["dispatcher"].test_client()
    form = {"product": "pear", "quantity": "1", "unitPrice": "1", "idempotencyKey": "form-7"}
    for _ in range(2):
        response = client.post("/order", data=form, headers={"Accept": "text/html"})
        assert response.status_code == 303
    assert shop.orders.count() == 1


def test_a_browser_form_post_with_the_command_side_away_gets_the_page(shop: Shop) -> None:
    apps, router = shop.apps, shop.router
    router.down.add("command-order")
    response = (
        apps["dispatcher"]
        .test_client()
        .post(
            "/order",
            data={"product": "pear", "quantity": "1", "unitPrice": "1"},
            headers={"Accept": "text/html"},
        )
    )
    assert response.status_code == 503
    assert response.mimetype == "text/html"
    assert b"try again" in response.data


def test_an_idempotency_key_reused_with_another_order_is_a_422_and_changes_nothing(
    shop: Shop,
) -> None:
    apps = shop.apps
    first = place(apps, **{"Idempotency-Key": "key-422"})
    assert first.status_code == 202
    other = place(
        apps, {**ORDER, "quantity": ORDER["quantity"] + 1}, **{"Idempotency-Key": "key-422"}
    )
    assert other.status_code == 422, other.data
    assert other.mimetype == "application/problem+json"
    assert "Idempotency-Key" in other.get_json()["detail"]
    assert shop.orders.count() == 1
    stored, _ = shop.orders.get(first.get_json()["orderId"])
    assert stored.quantity == ORDER["quantity"]
    # The same body again is still the first order, as before.
    again = place(apps, **{"Idempotency-Key": "key-422"})
    assert again.status_code == 202
    assert again.get_json()["orderId"] == first.get_json()["orderId"]


def test_json_answers_are_not_cached_or_sniffed(shop: Shop) -> None:
    client = shop.apps["dispatcher"].test_client()
    for response in (client.get("/api/stats"), client.get("/api/orders/nope!")):
        assert response.mimetype in ("application/json", "application/problem+json")
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    page = client.get("/order")
    assert page.headers["X-Content-Type-Options"] == "nosniff"


def test_a_redirect_never_names_the_host_the_client_sent(shop: Shop) -> None:
    # Werkzeug redirects /api/orders/<id>/ style paths and builds the URL from Host.
    app = shop.apps["dispatcher"]
    app.add_url_rule("/slash/", "slash", lambda: "x")
    response = app.test_client().get("/slash", headers={"Host": "evil.example"})
    assert response.status_code == 308
    assert response.headers["Location"] == "/slash/"


def test_stats_say_how_far_the_totals_are_behind_and_what_is_stuck(shop: Shop) -> None:
    apps, router = shop.apps, shop.router
    for _ in range(3):
        place(apps)
    assert stats(apps)["pipeline"] == {"ordersLogged": 3, "behind": 3, "stuck": 0}
    router.refuse.add("process-data")  # its refusals are parked: stuck for an operator
    assert relay(apps)["parked"] == 3
    assert stats(apps)["pipeline"] == {"ordersLogged": 3, "behind": 3, "stuck": 3}
    router.refuse.clear()
    for row in shop.orders.outbox("parked"):
        assert apps["order-db"].test_client().post(f"/outbox/{row['id']}/retry").status_code == 200
    assert relay(apps)["sent"] == 3
    assert stats(apps)["pipeline"] == {"ordersLogged": 3, "behind": 0, "stuck": 0}
    router.down.add("order-db")  # the write side away: the totals still come, without it
    answer = stats(apps)
    assert answer["ordersCounted"] == 3 and "pipeline" not in answer

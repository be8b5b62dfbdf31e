"""Inputs that once made a 500: each is a 4xx application/problem+json and changes nothing."""

from __future__ import annotations

import json

import pytest

from cqrs_common import events
from tests.unit.inprocess import Shop

RECEIVERS = ("order-db", "process-data", "stats-order-db")
# Far deeper than Python's recursion limit, and still well under the 64 KiB body limit.
DEEP = "[" * 30_000 + "]" * 30_000
HUGE = "9" * 30


def stored(shop: Shop) -> tuple[int, int]:
    orders = shop.orders.count()
    counted = shop.stats.totals()
    return orders, counted["ordersCounted"]


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.data[:300])
    assert response.mimetype == "application/problem+json"
    return response.get_json()


def test_deeply_nested_json_to_the_api_is_a_400(shop: Shop) -> None:
    apps = shop.apps
    client = apps["dispatcher"].test_client()
    for path in ("/api/orders", "/order"):
        response = client.post(path, data=DEEP, content_type="application/json")
        problem = assert_problem(response, 400)
        assert problem["invalid-params"][0]["name"] == "body"
    assert stored(shop) == (0, 0)


@pytest.mark.parametrize("role", RECEIVERS)
def test_deeply_nested_json_in_an_event_is_a_400(shop: Shop, role: str) -> None:
    apps = shop.apps
    client = apps[role].test_client()
    attributes = {"specversion": "1.0", "id": "1", "source": "/t", "type": events.STATS_DELTA}
    structured = json.dumps(attributes)[:-1] + f', "data": {DEEP}}}'
    response = client.post(
        "/", data=structured, content_type="application/cloudevents+json; charset=utf-8"
    )
    assert_problem(response, 400)
    binary = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/t",
              "ce-type": events.ORDER_PLACED, "Content-Type": "application/json"}  # fmt: skip
    assert_problem(client.post("/", data=DEEP, headers=binary), 400)
    assert stored(shop) == (0, 0)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", f"/orders?after={HUGE}", 400),
        ("GET", f"/orders?after=-{HUGE}", 400),
        ("GET", f"/orders?after=1&limit={HUGE}", 200),  # capped at a page
        ("GET", f"/orders?after={'9' * 5000}", 400),  # past int()'s digit limit
        ("POST", f"/outbox/{HUGE}/retry", 404),
        ("GET", f"/orders/{HUGE}", 404),
    ],
)
def test_huge_numbers_in_order_db_urls_are_a_4xx(
    shop: Shop, method: str, path: str, status: int
) -> None:
    apps = shop.apps
    response = apps["order-db"].test_client().open(path, method=method)
    assert response.status_code == status, response.data[:300]
    if status != 200:
        assert response.mimetype == "application/problem+json"


@pytest.mark.parametrize(
    "path", [f"/api/orders/{HUGE}", f"/api/orders/{'9' * 100}", f"/order/orders?x={HUGE}"]
)
def test_huge_numbers_in_public_urls_are_no_500(shop: Shop, path: str) -> None:
    apps = shop.apps
    response = apps["dispatcher"].test_client().get(path)
    assert response.status_code < 500, response.data[:300]


@pytest.mark.parametrize("role", RECEIVERS)
@pytest.mark.parametrize("body", ["[1,2,3]", '"str"', "null", "7", " [] "])
def test_a_structured_event_that_is_not_a_json_object_is_a_400(
    shop: Shop, role: str, body: str
) -> None:
    client = shop.apps[role].test_client()
    response = client.post("/", data=body, content_type="application/cloudevents+json")
    problem = assert_problem(response, 400)
    assert "JSON object" in problem["detail"]
    assert stored(shop) == (0, 0)

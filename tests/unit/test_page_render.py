"""The page as rendered on the server, with a stand-in for the dispatcher's gateway: no browser,
no other role (the browser tests drive the real page in Chromium)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask

from cqrs_common.client import UpstreamError
from dispatcher import create_app
from dispatcher.page import age, form_response
from tests.support import role_settings

STATS = {
    "products": {
        "apple": {"quantity": 3, "totalPrice": "4.50"},
        "pear": {"quantity": 6, "totalPrice": "1234567.80"},
    },
    "ordersCounted": 2,
    "updatedAt": "2026-11-26T06:00:00.000Z",
}


class Gateway:
    def __init__(self, stats: dict[str, Any] | None = STATS, status: str | None = "pending"):
        self._stats = stats
        self._status = status
        self.asked: list[str] = []

    def stats(self) -> dict[str, Any]:
        if self._stats is None:
            raise UpstreamError("query-order", "unreachable")
        return self._stats

    def order_status(self, order_id: str) -> dict[str, str]:
        self.asked.append(order_id)
        if self._status is None:
            raise UpstreamError("query-order", "unreachable")
        return {"orderId": order_id, "status": self._status}


def make_app(gateway: Gateway) -> Flask:
    """The dispatcher with a stand-in for the roles behind it (its composition root)."""
    return create_app(role_settings("dispatcher", LOG_LEVEL="WARNING"), gateway=gateway)


def text_of(html: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</', html, re.S)
    assert match, element_id
    return match.group(1).strip()


def test_root_redirects_to_the_page() -> None:
    response = make_app(Gateway()).test_client().get("/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/order"


def test_the_page_shows_the_totals_and_bars_from_the_read_side() -> None:
    response = make_app(Gateway()).test_client().get("/order")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "Content-Security-Policy" in response.headers
    assert text_of(html, "orders-counted") == "2"
    assert ">1,234,567.80<" in html and ">4.50<" in html
    # The larger product fills its bar; the other is in proportion.
    assert 'data-product="pear" data-metric="quantity" width="100.0"' in html
    assert 'data-product="apple" data-metric="quantity" width="50.0"' in html
    assert 'data-product="apple" data-metric="totalPrice" width="0.0"' in html  # 4.50 of 1.2M
    assert 'id="stats-notice" hidden' in html


def test_the_page_is_served_when_the_read_side_is_down() -> None:
    response = make_app(Gateway(stats=None)).test_client().get("/order")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "The totals are unavailable right now" in html
    assert 'id="stats-notice" hidden' not in html
    assert text_of(html, "orders-counted") == "\N{EN DASH}"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("counted", "is counted in the totals"),
        ("pending", "will reach the totals in a moment"),
        (None, "its progress cannot be checked right now"),
    ],
)
def test_a_placed_order_is_confirmed(status: str | None, expected: str) -> None:
    gateway = Gateway(status=status)
    html = make_app(gateway).test_client().get("/order?placed=abc-123").get_data(as_text=True)
    assert gateway.asked == ["abc-123"]
    assert "Order placed." in html and expected in html
    assert ('http-equiv="refresh"' in html) == (status != "counted")


def test_a_malformed_placed_id_is_ignored_not_echoed() -> None:
    gateway = Gateway()
    html = make_app(gateway).test_client().get("/order?placed=<script>x").get_data(as_text=True)
    assert gateway.asked == []
    assert "Order placed." not in html and "<script>x" not in html


def test_a_placed_form_post_redirects_back_to_the_page() -> None:
    app = make_app(Gateway())
    with app.test_request_context("/order", method="POST"):
        response = form_response({"product": "apple"}, "order-1", None)
    assert response.status_code == 303
    assert response.headers["Location"] == "/order?placed=order-1"


def test_a_refused_form_post_shows_each_reason_by_its_field_and_keeps_the_values() -> None:
    app = make_app(Gateway())
    values = {"product": "pear", "quantity": '0"><script>', "unitPrice": "1.5"}
    with app.test_request_context("/order", method="POST"):
        response = form_response(values, None, {"quantity": "must be a whole number"})
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert text_of(html, "quantity-error") == "Must be a whole number."
    assert text_of(html, "unitPrice-error") == ""
    assert 'value="0&#34;&gt;&lt;script&gt;"' in html  # kept, and escaped
    assert 'value="1.5"' in html
    assert re.search(r'value="pear" required\s+checked', html)
    assert "Please correct the field marked below." in html


def test_a_form_post_the_shop_could_not_take_says_so_above_the_form() -> None:
    app = make_app(Gateway())
    with app.test_request_context("/order", method="POST"):
        response = form_response(
            {"product": "apple"}, None, {"body": "the shop is busy; try again"}, status=503
        )
    assert response.status_code == 503
    assert text_of(response.get_data(as_text=True), "form-error-text") == (
        "The shop is busy; try again."
    )


def test_age_reads_like_a_status_line() -> None:
    now = datetime(2026, 11, 26, 6, 0, 0, tzinfo=UTC)
    assert age(None, now) == "no orders yet"
    assert age("2026-11-26T05:59:58.000Z", now) == "just now"
    assert age("2026-11-26T05:59:30.000Z", now) == "30 s ago"
    assert age("2026-11-26T05:50:00.000Z", now) == "10 min ago"
    assert age("2026-11-26T03:00:00.000Z", now) == "3 h ago"
    assert age("2026-11-20T03:00:00.000Z", now) == "2026-11-20 03:00 UTC"
    assert age("yesterday", now) == "unknown"


def test_each_rendered_form_carries_its_own_idempotency_key() -> None:
    client = make_app(Gateway()).test_client()
    keys = [
        re.search(r'name="idempotencyKey" value="([0-9a-f]{32})"', client.get("/order").text)
        for _ in range(2)
    ]
    assert all(keys)
    assert keys[0].group(1) != keys[1].group(1)  # type: ignore[union-attr]


# ---- the merchant's totals and a placed order agree ----------------------------------------


class CountedMidway(Gateway):
    """The order becomes counted between the page's first and second read of the read side:
    any read after the first sees it, in its status and in the totals alike."""

    ORDER = {"product": "apple", "quantity": 5, "totalPrice": "2.50"}

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def _counted(self) -> bool:
        self.reads += 1
        return self.reads > 1

    def stats(self) -> dict[str, Any]:
        if not self._counted():
            return STATS
        apple = STATS["products"]["apple"]
        return {
            **STATS,
            "products": {**STATS["products"], "apple": {"quantity": apple["quantity"] + 5,
                                                         "totalPrice": "7.00"}},
            "ordersCounted": STATS["ordersCounted"] + 1,
        }  # fmt: skip

    def order_status(self, order_id: str) -> dict[str, str]:
        self.asked.append(order_id)
        return {"orderId": order_id, "status": "counted" if self._counted() else "pending"}


def test_an_order_shown_as_counted_is_in_the_totals_shown_with_it() -> None:
    # Read in the other order, the page could say "counted" over totals without the order,
    # and (being counted) never refresh them without JavaScript.
    html = make_app(CountedMidway()).test_client().get("/order?placed=o-1").get_data(as_text=True)
    counted = "is counted in the totals" in html
    with_order = text_of(html, "orders-counted") == "3"
    if counted:
        assert with_order, "the page says counted over totals without the order"
    else:  # pending: the page refreshes itself until it is counted
        assert 'http-equiv="refresh"' in html


# ---- words for a customer ------------------------------------------------------------------

JARGON = ("command side", "read side", "write side", "cqrs", "projection", "event")


def test_the_subtitle_speaks_to_a_customer() -> None:
    html = make_app(Gateway()).test_client().get("/order").get_data(as_text=True)
    match = re.search(r'class="tagline"[^>]*>(.*?)</p>', html, re.S)
    assert match, "no subtitle"
    tagline = match.group(1).lower()
    assert not [word for word in JARGON if word in tagline], tagline
    assert "apple" in tagline and "pear" in tagline


def refusals(app: Flask, form: dict[str, str]) -> tuple[dict[str, str], dict[str, str], str]:
    """What the page shows next to each field, the API's reason for each field, its detail."""
    client = app.test_client()
    page = client.post("/order", data=form, headers={"Accept": "text/html"})
    assert page.status_code == 400
    html = page.get_data(as_text=True)
    shown = {f: text_of(html, f"{f}-error") for f in ("product", "quantity", "unitPrice")}
    api = client.post("/api/orders", json=form)
    assert api.status_code == 400
    assert api.mimetype == "application/problem+json"
    reasons = {p["name"]: p["reason"] for p in api.get_json()["invalid-params"]}
    return {f: m for f, m in shown.items() if m}, reasons, api.get_json()["detail"]


@pytest.mark.parametrize(
    ("form", "field", "expected"),
    [
        ({"product": "kiwi", "quantity": "1", "unitPrice": "1"}, "product",
         "Choose a product: apple or pear."),
        ({"quantity": "1", "unitPrice": "1"}, "product", "Choose a product: apple or pear."),
        ({"product": "apple", "quantity": "0", "unitPrice": "1"}, "quantity",
         "Quantity must be a whole number from 1 to 1,000,000."),
        ({"product": "apple", "quantity": "2.5", "unitPrice": "1"}, "quantity",
         "Quantity must be a whole number from 1 to 1,000,000."),
        ({"product": "apple", "quantity": "1", "unitPrice": "1.234"}, "unitPrice",
         "Unit price must be a number from 0 to 1,000,000 with at most 2 decimal places,"
         " such as 1.50."),
    ],
)  # fmt: skip
def test_refusals_are_sentences_a_customer_reads_on_the_page_and_in_the_api(
    form: dict[str, str], field: str, expected: str
) -> None:
    app = make_app(Gateway())  # the page's totals; the order never gets that far
    shown, reasons, detail = refusals(app, form)
    assert shown == {field: expected}
    # The API names the same field (the contract's field names), with the same words.
    assert reasons == {field: expected}
    assert detail == expected


@pytest.mark.parametrize(
    ("pipeline", "shown", "stuck"),
    [
        ({"ordersLogged": 2, "behind": 0, "stuck": 0}, "Up to date: every order placed is counted.",
         False),
        ({"ordersLogged": 9, "behind": 1, "stuck": 0}, "1 order not counted yet.", False),
        ({"ordersLogged": 9, "behind": 1200, "stuck": 3},
         "1,200 orders not counted yet; 3 stuck, waiting for an operator.", True),
        ({"ordersLogged": 3, "behind": 0, "stuck": 0, "countedNotLogged": 2},
         "The totals count 2 orders the order log does not hold: the write store has lost orders.",
         False),
        (None, "", False),
    ],
)  # fmt: skip
def test_the_page_says_how_far_behind_the_totals_are_and_what_is_stuck(
    pipeline: dict[str, int] | None, shown: str, stuck: bool
) -> None:
    stats = {**STATS, **({"pipeline": pipeline} if pipeline else {})}
    html = make_app(Gateway(stats=stats)).test_client().get("/order").get_data(as_text=True)
    line = re.search(r'<p class="hint" id="pipeline"([^>]*)>(.*?)</p>', html, re.S)
    assert line is not None
    assert line.group(2) == shown
    assert ("hidden" in line.group(1)) is (pipeline is None)
    assert ("data-stuck" in line.group(1)) is stuck

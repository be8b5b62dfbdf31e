"""Domain rules: products, quantities and exact money."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cqrs_common import events
from cqrs_common.domain import (
    Order,
    ValidationError,
    delta_for,
    order_amount,
    parse_money,
    parse_place_order,
    parse_quantity,
    parse_timestamp,
)


def test_three_orders_of_ten_cents_total_exactly_thirty_cents() -> None:
    total = sum((order_amount(1, parse_money("0.10", "unitPrice")) for _ in range(3)), Decimal(0))
    assert total == Decimal("0.30")
    assert str(total) == "0.30"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1.50", "1.50"), ("0", "0.00"), (Decimal("0.1"), "0.10"), (3, "3.00"), (0.1, "0.10"),
     ("1000000", "1000000.00"), ("1.500", "1.50"), (" 2.5 ", "2.50")],
)  # fmt: skip
def test_money_is_parsed_exactly(raw: object, expected: str) -> None:
    assert str(parse_money(raw, "unitPrice")) == expected


@pytest.mark.parametrize(
    "raw",
    ["-1", "1.555", "abc", "", None, True, "NaN", "Infinity", "1e3", "1000000.01", [], {}, "1,5",
     Decimal("-0.01"), Decimal("NaN"), float("inf")],
)  # fmt: skip
def test_bad_money_names_the_field(raw: object) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_money(raw, "unitPrice")
    assert caught.value.field == "unitPrice"


@pytest.mark.parametrize("raw", [1, "1", 1_000_000, "42", 3.0, Decimal("7")])
def test_whole_quantities_are_accepted(raw: object) -> None:
    assert parse_quantity(raw) == int(raw)  # type: ignore[call-overload]


@pytest.mark.parametrize("raw", [0, -1, 1_000_001, 1.5, "1.5", "x", "", None, True, "-3", [1]])
def test_other_quantities_are_refused(raw: object) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_quantity(raw)
    assert caught.value.field == "quantity"


def test_every_bad_field_is_reported_at_once() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_place_order({"product": "kiwi", "quantity": 0, "unitPrice": "-1"})
    assert set(caught.value.errors) == {"product", "quantity", "unitPrice"}


def test_a_good_order_is_parsed() -> None:
    command = parse_place_order({"product": "pear", "quantity": "3", "unitPrice": "1.5"})
    assert (command.product, command.quantity, command.unit_price) == ("pear", 3, Decimal("1.50"))


def test_a_body_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(ValidationError):
        parse_place_order(["apple"])


def test_timestamps_need_a_zone() -> None:
    assert parse_timestamp("2026-11-26T06:00:00.000Z", "placedAt") == "2026-11-26T06:00:00.000Z"
    assert parse_timestamp("2026-11-26T07:00:00+01:00", "placedAt") == "2026-11-26T07:00:00+01:00"
    with pytest.raises(ValidationError):
        parse_timestamp("2026-11-26T06:00:00", "placedAt")


def test_event_data_round_trips() -> None:
    order = Order("o-1", "apple", 3, Decimal("1.50"), "2026-11-26T06:00:00.000Z")
    data = events.recorded_to_data(order, 7)
    assert data["unitPrice"] == "1.50"  # money travels as a string, never a float
    assert events.recorded_from_data(data) == (order, 7)
    delta = delta_for(order)
    assert events.delta_to_data(delta)["amount"] == "4.50"
    assert events.delta_from_data(events.delta_to_data(delta)) == delta


def test_event_types_follow_the_contract() -> None:
    assert events.EVENT_TYPES == (
        "com.example.cqrs.order.placed",
        "com.example.cqrs.order.recorded",
        "com.example.cqrs.stats.delta",
    )

"""CloudEvent types, sources and the data each one carries (the contract's event table)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from cqrs_common.domain import (
    Order,
    StatsDelta,
    ValidationError,
    order_amount,
    parse_money,
    parse_order_id,
    parse_product,
    parse_quantity,
    parse_timestamp,
)

PREFIX = "com.example.cqrs."
ORDER_PLACED = PREFIX + "order.placed"
ORDER_RECORDED = PREFIX + "order.recorded"
STATS_DELTA = PREFIX + "stats.delta"
EVENT_TYPES: tuple[str, ...] = (ORDER_PLACED, ORDER_RECORDED, STATS_DELTA)
# Sent by a Knative PingSource to order-db: wake up (maybe from zero) and relay the outbox.
PING = "dev.knative.sources.ping"


def source(role_name: str) -> str:
    """The CloudEvent `source` of everything a role produces."""
    return f"/cqrs/{role_name}"


def _require_object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValidationError("data", "event data must be a JSON object")
    return data


def _line_to_data(line: Order | StatsDelta) -> dict[str, Any]:
    """What an order and its delta both say: which order, of what, how many, at what price."""
    return {
        "orderId": line.order_id,
        "product": line.product,
        "quantity": line.quantity,
        "unitPrice": str(line.unit_price),
    }


def _line_from_data(data: Any) -> tuple[dict[str, Any], str, str, int, Decimal]:
    data = _require_object(data)
    return (
        data,
        parse_order_id(data.get("orderId")),
        parse_product(data.get("product")),
        parse_quantity(data.get("quantity")),
        parse_money(data.get("unitPrice"), "unitPrice"),
    )


def order_to_data(order: Order) -> dict[str, Any]:
    return {**_line_to_data(order), "placedAt": order.placed_at}


def order_from_data(data: Any) -> Order:
    """Parse the data of `order.placed` (and the order part of `order.recorded`)."""
    data, order_id, product, quantity, unit_price = _line_from_data(data)
    return Order(
        order_id, product, quantity, unit_price, parse_timestamp(data.get("placedAt"), "placedAt")
    )


def recorded_to_data(order: Order, sequence: int) -> dict[str, Any]:
    return {**order_to_data(order), "sequence": sequence}


def recorded_from_data(data: Any) -> tuple[Order, int]:
    data = _require_object(data)
    sequence = data.get("sequence")
    if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 1:
        raise ValidationError("sequence", "must be a whole number of at least 1")
    return order_from_data(data), sequence


def delta_to_data(delta: StatsDelta) -> dict[str, Any]:
    return {**_line_to_data(delta), "amount": str(delta.amount)}


def delta_from_data(data: Any) -> StatsDelta:
    """Parse a `stats.delta`; its amount must be quantity x unitPrice, so a delta cannot add to
    the totals anything an order could not have."""
    data, order_id, product, quantity, unit_price = _line_from_data(data)
    amount = parse_money(data.get("amount"), "amount", max_places=2, maximum=None)
    expected = order_amount(quantity, unit_price)
    if amount != expected:
        raise ValidationError("amount", f"must be quantity x unitPrice ({expected})")
    return StatsDelta(order_id, product, quantity, unit_price, amount)

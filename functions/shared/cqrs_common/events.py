"""CloudEvent types, sources and the data each one carries (the contract's event table)."""

from __future__ import annotations

from typing import Any

from cqrs_common.domain import (
    Order,
    StatsDelta,
    ValidationError,
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


def order_to_data(order: Order) -> dict[str, Any]:
    return {
        "orderId": order.order_id,
        "product": order.product,
        "quantity": order.quantity,
        "unitPrice": str(order.unit_price),
        "placedAt": order.placed_at,
    }


def order_from_data(data: Any) -> Order:
    """Parse the data of `order.placed` (and the order part of `order.recorded`)."""
    data = _require_object(data)
    return Order(
        order_id=parse_order_id(data.get("orderId")),
        product=parse_product(data.get("product")),
        quantity=parse_quantity(data.get("quantity")),
        unit_price=parse_money(data.get("unitPrice"), "unitPrice"),
        placed_at=parse_timestamp(data.get("placedAt"), "placedAt"),
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
    return {
        "orderId": delta.order_id,
        "product": delta.product,
        "quantity": delta.quantity,
        "amount": str(delta.amount),
    }


def delta_from_data(data: Any) -> StatsDelta:
    data = _require_object(data)
    return StatsDelta(
        order_id=parse_order_id(data.get("orderId")),
        product=parse_product(data.get("product")),
        quantity=parse_quantity(data.get("quantity")),
        amount=parse_money(data.get("amount"), "amount", max_places=2, maximum=None),
    )

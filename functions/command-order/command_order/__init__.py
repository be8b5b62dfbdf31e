"""command-order: validates a customer's order, sends `order.placed` to order-db, and answers only
once the order is durably stored."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from flask import Flask, Response, jsonify, request

from cqrs_common import events, tracing
from cqrs_common.client import Client
from cqrs_common.cloudevents_io import Publisher, RejectedEventError, new_event
from cqrs_common.config import Settings
from cqrs_common.domain import (
    ConflictError,
    Order,
    PlaceOrder,
    now_iso,
    order_id_for,
    parse_order_id,
    parse_place_order,
)
from cqrs_common.roles import COMMAND_ORDER
from cqrs_common.web import create_base_app, problem, read_json_body

Publish = Callable[[BaseCloudEvent], None]


def order_id_of(payload: Any, idempotency_key: str | None) -> str:
    """The id the caller chose (the dispatcher sends `orderId`, the same on each of its tries),
    else one made here from the Idempotency-Key, or a new one."""
    if isinstance(payload, dict) and "orderId" in payload:
        return parse_order_id(payload["orderId"])
    return order_id_for(idempotency_key)


def place_order(command: PlaceOrder, order_id: str, publish: Publish) -> Order:
    """Send `order.placed`; returns once order-db has stored it. ConflictError if the id names
    another order already stored (422 from order-db)."""
    order = Order(order_id, command.product, command.quantity, command.unit_price, now_iso())
    event = new_event(
        events.ORDER_PLACED,
        events.source(COMMAND_ORDER.name),
        order.order_id,
        events.order_to_data(order),
        extensions=tracing.event_trace_attributes(),
    )
    try:
        publish(event)
    except RejectedEventError as exc:
        if exc.status == 422:
            raise ConflictError(exc.detail) from None
        raise
    return order


def create_app(settings: Settings | None = None, *, client: Client | None = None) -> Flask:
    settings = settings or Settings.from_env(COMMAND_ORDER.name)
    # One try: the dispatcher retries (the same order id), so retrying here too would multiply.
    publish = Publisher(settings.sink, (client or Client.for_role(settings)).with_retries(0))
    app = create_base_app(settings, __name__)

    @app.post("/orders")
    def orders() -> tuple[Response, int] | Response:
        payload = read_json_body()
        command = parse_place_order(payload)
        order_id = order_id_of(payload, request.headers.get("Idempotency-Key"))
        try:
            order = place_order(command, order_id, publish)
        except RejectedEventError as exc:
            return problem(400, "Order refused by the write store", exc.detail)
        return jsonify(orderId=order.order_id, status="accepted"), 202

    return app

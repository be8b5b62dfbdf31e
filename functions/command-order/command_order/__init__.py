"""command-order: validates a customer's order, sends `order.placed` to order-db, and answers only
once the order is durably stored."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from flask import Flask, Response, jsonify, request

from cqrs_common import events
from cqrs_common.cloudevents_io import Publisher, RejectedEventError, new_event
from cqrs_common.config import Settings
from cqrs_common.domain import Order, PlaceOrder, ValidationError, now_iso, parse_place_order
from cqrs_common.http import Client
from cqrs_common.roles import COMMAND_ORDER
from cqrs_common.web import create_base_app, problem, read_json_body

# Order ids made from an Idempotency-Key live in their own UUID namespace.
IDEMPOTENCY_NAMESPACE = uuid.UUID("8f0d5a3e-6c1b-4d0e-9a57-3b1f2c4e5d60")
MAX_KEY_LENGTH = 255


def order_id_for(idempotency_key: str | None) -> str:
    """A retried request with the same key gets the same order id, so order-db stores it once."""
    if idempotency_key is None:
        return str(uuid.uuid4())
    key = idempotency_key.strip()
    # Visible ASCII only: what an HTTP header carries intact through every proxy.
    if not key or len(key) > MAX_KEY_LENGTH or not (key.isascii() and key.isprintable()):
        raise ValidationError(
            "Idempotency-Key", f"must be 1 to {MAX_KEY_LENGTH} printable ASCII characters"
        )
    return str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, key))


def place_order(command: PlaceOrder, order_id: str, publish: Publisher) -> Order:
    order = Order(order_id, command.product, command.quantity, command.unit_price, now_iso())
    publish(
        new_event(
            events.ORDER_PLACED,
            events.source(COMMAND_ORDER.name),
            order.order_id,
            events.order_to_data(order),
        )
    )
    return order


def create_app(env: Mapping[str, str] | None = None) -> Flask:
    settings = Settings.from_env(COMMAND_ORDER.name, env)
    publish = Publisher(settings.sink, Client(settings.http_timeout, settings.http_retries))
    app = create_base_app(settings, __name__)

    @app.post("/orders")
    def orders() -> Response:
        command = parse_place_order(read_json_body())
        order_id = order_id_for(request.headers.get("Idempotency-Key"))
        try:
            order = place_order(command, order_id, publish)
        except RejectedEventError as exc:
            return problem(400, "Order refused by the write store", exc.detail)
        return jsonify(orderId=order.order_id, status="accepted"), 202

    return app

"""command-order: validates a customer's order, sends `order.placed` to order-db, and answers only
once the order is durably stored."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, jsonify, request

from cqrs_common import events
from cqrs_common.cloudevents_io import Publisher, RejectedEventError, new_event
from cqrs_common.config import Settings
from cqrs_common.domain import (
    Order,
    PlaceOrder,
    now_iso,
    order_id_for,
    parse_order_id,
    parse_place_order,
)
from cqrs_common.http import Client
from cqrs_common.roles import COMMAND_ORDER
from cqrs_common.web import create_base_app, problem, read_json_body

__all__ = ["create_app", "order_id_for", "place_order"]


def order_id_of(payload: Any, idempotency_key: str | None) -> str:
    """The id the caller chose (the dispatcher sends `orderId`, the same on each of its tries),
    else one made here from the Idempotency-Key, or a new one."""
    if isinstance(payload, dict) and "orderId" in payload:
        return parse_order_id(payload["orderId"])
    return order_id_for(idempotency_key)


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
    # One try: the dispatcher retries (the same order id), so retrying here too would multiply.
    publish = Publisher(settings.sink, Client(settings.http_timeout, retries=0))
    app = create_base_app(settings, __name__)

    @app.post("/orders")
    def orders() -> Response:
        payload = read_json_body()
        command = parse_place_order(payload)
        order_id = order_id_of(payload, request.headers.get("Idempotency-Key"))
        try:
            order = place_order(command, order_id, publish)
        except RejectedEventError as exc:
            return problem(400, "Order refused by the write store", exc.detail)
        return jsonify(orderId=order.order_id, status="accepted"), 202

    return app

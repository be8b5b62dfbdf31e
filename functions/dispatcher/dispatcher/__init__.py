"""dispatcher: the only public entry point. Serves the page and the public API, routes commands
to command-order and queries to query-order."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request, url_for

from cqrs_common.client import Client, UpstreamError
from cqrs_common.config import Settings
from cqrs_common.domain import (
    PRODUCTS,
    ConflictError,
    PlaceOrder,
    ValidationError,
    order_id_for,
    parse_order_id,
    parse_place_order,
)
from cqrs_common.roles import COMMAND_ORDER, DISPATCHER, QUERY_ORDER
from cqrs_common.web import (
    UnsupportedMediaType,
    create_base_app,
    read_json_body,
    upstream_status,
    validation_problem,
)
from dispatcher.page import form_response, page

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
OPENAPI = Path(__file__).with_name("openapi.json")


class Gateway:
    """The other roles as the dispatcher sees them: commands go to command-order, queries to
    query-order."""

    def __init__(self, settings: Settings, client: Client) -> None:
        self.settings = settings
        # The edge retries (the same order id on every try); the roles behind it try once.
        self.client = client.with_retries(settings.http_retries)

    def place_order(self, command: PlaceOrder, idempotency_key: str | None) -> str:
        # The order's id is made here, once, before the first hop that may be retried: every
        # try then carries it, and order-db stores the order once however often a hop retries.
        order_id = order_id_for(idempotency_key)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}
        body = {
            "orderId": order_id,
            "product": command.product,
            "quantity": command.quantity,
            "unitPrice": str(command.unit_price),
        }
        url = f"{self.settings.url_of(COMMAND_ORDER)}/orders"
        response = self.client.request("POST", url, json=body, headers=headers)
        if response.status_code == 202:
            return response.json()["orderId"]
        if response.status_code == 422:  # the key names another order already placed
            raise ConflictError(response.json().get("detail", "the key names another order"))
        if response.status_code == 400 and response.headers.get("content-type", "").startswith(
            "application/problem+json"
        ):
            problem = response.json()
            params = {p["name"]: p["reason"] for p in problem.get("invalid-params", [])}
            if params:
                raise ValidationError(*next(iter(params.items())), *list(params.items())[1:])
            raise ValidationError("body", problem.get("detail", "refused"))
        raise UpstreamError(url, f"answered {response.status_code}", response.status_code)

    def stats(self) -> dict[str, Any]:
        return self.client.get_json(f"{self.settings.url_of(QUERY_ORDER)}/stats")

    def order_status(self, order_id: str) -> dict[str, Any]:
        return self.client.get_json(f"{self.settings.url_of(QUERY_ORDER)}/orders/{order_id}")


def legacy_totals(stats: Mapping[str, Any]) -> str:
    """The original project's `/order/orders` JSON: prices as JSON numbers, written exactly."""
    fields: list[str] = []
    for product in PRODUCTS:
        totals = stats["products"][product]
        name = product.capitalize()
        price = Decimal(str(totals["totalPrice"]))  # a decimal literal is a valid JSON number
        fields.append(f'"quantity{name}": {int(totals["quantity"])}')
        fields.append(f'"totalPrice{name}": {price}')
    return "{" + ", ".join(fields) + "}"


def create_app(settings: Settings | None = None, *, gateway: Gateway | None = None) -> Flask:
    settings = settings or Settings.from_env(DISPATCHER.name)
    gateway = gateway or Gateway(settings, Client.for_role(settings))
    app = create_base_app(settings, __name__)
    app.extensions["dispatcher"] = gateway  # the page (dispatcher.page) reads the totals there
    app.register_blueprint(page)
    _add_order_routes(app, gateway)
    _add_query_routes(app, gateway)
    return app


def _accepted(order_id: str) -> Response:
    response = jsonify(orderId=order_id, status="accepted")
    response.status_code = 202
    response.headers["Location"] = url_for("order_status", order_id=order_id)
    return response


def _form_order(gateway: Gateway) -> Response:
    """The page's plain form post: the page again for a browser, JSON for a script."""
    values = {k: v for k, v in request.form.items() if k in ("product", "quantity", "unitPrice")}
    # The page's form carries its own key, so a double submit places one order. An
    # Idempotency-Key header sent empty is refused, as on /api/orders (the spec's minLength);
    # only an absent header falls back to the form's key.
    key = request.headers.get("Idempotency-Key")
    if key is None:
        key = request.form.get("idempotencyKey") or None
    browser = request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html"
    try:
        command = parse_place_order(values)
        order_id = gateway.place_order(command, key)
    except ValidationError as exc:
        if browser:
            return form_response(values, None, exc.errors)
        return validation_problem(exc)
    except ConflictError as exc:
        if not browser:
            raise
        return form_response(values, None, {"body": str(exc)}, status=422)
    except UpstreamError as exc:
        if not browser:
            raise
        # The form's own key makes a second post of it the same order, whatever happened.
        retry = "the shop could not take the order just now; try again: it will not be placed twice"
        return form_response(values, None, {"body": retry}, status=upstream_status(exc))
    return form_response(values, order_id, None) if browser else _accepted(order_id)


def _add_order_routes(app: Flask, gateway: Gateway) -> None:
    @app.post("/order")
    def legacy_order() -> Response:
        """The original form post: form-encoded or JSON."""
        if request.mimetype in FORM_TYPES:
            return _form_order(gateway)
        if request.is_json:
            return api_orders()
        raise UnsupportedMediaType()

    @app.post("/api/orders")
    def api_orders() -> Response:
        command = parse_place_order(read_json_body())
        return _accepted(gateway.place_order(command, request.headers.get("Idempotency-Key")))


def _add_query_routes(app: Flask, gateway: Gateway) -> None:
    @app.get("/order/orders")
    def legacy_totals_route() -> Response:
        return Response(legacy_totals(gateway.stats()), mimetype="application/json")

    @app.get("/api/orders/<order_id>")
    def order_status(order_id: str) -> Response:
        return jsonify(gateway.order_status(parse_order_id(order_id)))

    @app.get("/api/stats")
    def api_stats() -> Response:
        return jsonify(gateway.stats())

    @app.get("/openapi.json")
    def openapi() -> Response:
        return Response(OPENAPI.read_bytes(), mimetype="application/json")

"""query-order: answers queries from the read store."""

from __future__ import annotations

from flask import Flask, Response, jsonify

from cqrs_common.client import Client
from cqrs_common.config import Settings
from cqrs_common.domain import parse_order_id
from cqrs_common.roles import QUERY_ORDER, STATS_ORDER_DB
from cqrs_common.web import create_base_app


def create_app(settings: Settings | None = None, *, client: Client | None = None) -> Flask:
    settings = settings or Settings.from_env(QUERY_ORDER.name)
    # One try: the dispatcher retries its query, so retrying here too would multiply.
    client = (client or Client(settings.http_timeout)).with_retries(0)
    stats_db = settings.url_of(STATS_ORDER_DB)
    app = create_base_app(settings, __name__)

    @app.get("/stats")
    def stats() -> Response:
        return jsonify(client.get_json(f"{stats_db}/stats"))

    @app.get("/orders/<order_id>")
    def order_status(order_id: str) -> Response:
        order_id = parse_order_id(order_id)
        return jsonify(client.get_json(f"{stats_db}/applied/{order_id}"))

    return app

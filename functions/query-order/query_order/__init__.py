"""query-order: answers queries from the read store."""

from __future__ import annotations

from collections.abc import Mapping

from flask import Flask, Response, jsonify

from cqrs_common.config import Settings
from cqrs_common.domain import parse_order_id
from cqrs_common.http import Client
from cqrs_common.roles import QUERY_ORDER
from cqrs_common.web import create_base_app


def create_app(env: Mapping[str, str] | None = None) -> Flask:
    settings = Settings.from_env(QUERY_ORDER.name, env)
    # One try: the dispatcher retries its query, so retrying here too would multiply.
    client = Client(settings.http_timeout, retries=0)
    app = create_base_app(settings, __name__)

    @app.get("/stats")
    def stats() -> Response:
        return jsonify(client.get_json(f"{settings.stats_db_url}/stats"))

    @app.get("/orders/<order_id>")
    def order_status(order_id: str) -> Response:
        order_id = parse_order_id(order_id)
        return jsonify(client.get_json(f"{settings.stats_db_url}/applied/{order_id}"))

    return app

"""stats-order-db: the read store. Applies each `stats.delta` exactly once and serves the totals."""

from __future__ import annotations

from collections.abc import Mapping

from flask import Flask, Response, jsonify

from cqrs_common import events
from cqrs_common.cloudevents_io import BadEventError, event_data
from cqrs_common.config import Settings
from cqrs_common.db import Database
from cqrs_common.domain import ValidationError, parse_order_id
from cqrs_common.roles import STATS_ORDER_DB
from cqrs_common.web import create_base_app, incoming_event
from stats_order_db.store import SCHEMA, StatsStore


def create_app(env: Mapping[str, str] | None = None) -> Flask:
    settings = Settings.from_env(STATS_ORDER_DB.name, env)
    db = Database(settings.database_url, SCHEMA)
    store = StatsStore(db)
    app = create_base_app(settings, __name__, ready=db.ping)
    app.extensions["stats_order_db"] = {"store": store}

    @app.post("/")
    def receive() -> Response:
        event = incoming_event()
        if event.get_type() != events.STATS_DELTA:
            raise BadEventError(
                f"unknown event type {event.get_type()!r} for {STATS_ORDER_DB.name}"
            )
        delta = events.delta_from_data(event_data(event))
        if event.get_subject() not in (None, delta.order_id):
            raise ValidationError("subject", "must equal data.orderId")
        applied = store.apply(delta)
        return jsonify(orderId=delta.order_id, status="applied" if applied else "duplicate")

    @app.get("/stats")
    def stats() -> Response:
        return jsonify(store.totals())

    @app.get("/applied/<order_id>")
    def applied(order_id: str) -> Response:
        order_id = parse_order_id(order_id)
        counted = store.is_applied(order_id)
        return jsonify(orderId=order_id, status="counted" if counted else "pending")

    try:
        db.ensure_schema()  # create the tables now if the store is up; otherwise on first use
    except Exception:
        app.logger.warning("read store not reachable at start; will retry on first use")
    return app

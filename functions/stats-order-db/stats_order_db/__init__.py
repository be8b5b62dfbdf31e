"""stats-order-db: the read store. Applies each `stats.delta` exactly once and serves the totals."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

from flask import Flask, Response, jsonify, request

from cqrs_common import events, metrics
from cqrs_common.config import Settings
from cqrs_common.db import Database
from cqrs_common.domain import StatsDelta, ValidationError, parse_order_id
from cqrs_common.receiver import Reply, receive_events
from cqrs_common.roles import STATS_ORDER_DB
from cqrs_common.web import create_base_app
from stats_order_db.store import SCHEMA, StatsStore

logger = logging.getLogger(__name__)


def apply(store: StatsStore, data: Any) -> Reply:
    """`stats.delta`: add it to the totals, once per order id."""
    delta = events.delta_from_data(data)
    return _applied(delta, store.apply(delta))


def apply_all(store: StatsStore, datas: Sequence[Any]) -> list[Reply | Exception]:
    """A batch of `stats.delta`s: the valid ones in one transaction, each refused one alone."""
    parsed = [_parse(data) for data in datas]
    applied = iter(store.apply_all([d for d in parsed if isinstance(d, StatsDelta)]))
    return [d if isinstance(d, Exception) else _applied(d, next(applied)) for d in parsed]


def _parse(data: Any) -> StatsDelta | ValidationError:
    try:
        return events.delta_from_data(data)
    except ValidationError as exc:
        metrics.count_delta("refused")
        return exc


def _applied(delta: StatsDelta, applied: bool) -> Reply:
    metrics.count_delta("applied" if applied else "duplicate")
    return {"orderId": delta.order_id, "status": "applied" if applied else "duplicate"}, 200


def create_app(settings: Settings | None = None, *, store: StatsStore | None = None) -> Flask:
    settings = settings or Settings.from_env(STATS_ORDER_DB.name)
    store = store or StatsStore(Database(settings.database_url, SCHEMA))
    app = create_base_app(settings, __name__, ready=store.db.ping)
    receive_events(
        app, STATS_ORDER_DB.name,
        {events.STATS_DELTA: partial(apply, store)},
        batch_handlers={events.STATS_DELTA: partial(apply_all, store)},
    )  # fmt: skip
    metrics.register_orders_counted(store.count)

    @app.after_request
    def _count_refused(response: Response) -> Response:
        if request.path == "/" and request.method == "POST" and response.status_code == 400:
            metrics.count_delta("refused")
        return response

    @app.get("/stats")
    def stats() -> Response:
        return jsonify(store.totals())

    @app.get("/applied/<order_id>")
    def applied(order_id: str) -> Response:
        order_id = parse_order_id(order_id)
        counted = store.is_applied(order_id)
        return jsonify(orderId=order_id, status="counted" if counted else "pending")

    try:
        store.db.ensure_schema()  # create the tables now if the store is up; else on first use
    except Exception:
        logger.warning("read store not reachable at start; will retry on first use")
    return app

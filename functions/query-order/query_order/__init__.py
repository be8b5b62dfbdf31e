"""query-order: answers queries from the read store."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify

from cqrs_common import metrics
from cqrs_common.client import Client, UpstreamError
from cqrs_common.config import Settings
from cqrs_common.domain import parse_order_id
from cqrs_common.roles import ORDER_DB, QUERY_ORDER, STATS_ORDER_DB
from cqrs_common.web import create_base_app

# The write side's position is a courtesy to the merchant: it must not slow the totals down.
POSITION_TIMEOUT = (0.5, 1.0)
logger = logging.getLogger(__name__)


def _pipeline(client: Client, order_db: str, counted: int) -> dict[str, int] | None:
    """How far the totals are behind the order log, and how many events are stuck (parked);
    None when the write side does not answer at once (the totals are served anyway)."""
    try:
        position = client.get_json(f"{order_db}/position", timeout=POSITION_TIMEOUT)
    except UpstreamError:
        return None
    logged = int(position["ordersLogged"])
    pipeline = {
        "ordersLogged": logged,
        "behind": max(0, logged - counted),
        "stuck": int(position["outbox"]["parked"]),
    }
    # Counted orders the log does not hold: the write store lost acknowledged orders (restored
    # from an old backup, a deleted file). Never "up to date": said here, logged, and a metric.
    unlogged = max(0, counted - logged)
    metrics.set_counted_not_logged(unlogged)
    if unlogged:
        logger.error("the totals count %d orders the order log does not hold", unlogged)
        pipeline["countedNotLogged"] = unlogged
    return pipeline


def create_app(settings: Settings | None = None, *, client: Client | None = None) -> Flask:
    settings = settings or Settings.from_env(QUERY_ORDER.name)
    # One try: the dispatcher retries its query, so retrying here too would multiply.
    client = (client or Client.for_role(settings)).with_retries(0)
    stats_db = settings.url_of(STATS_ORDER_DB)
    app = create_base_app(settings, __name__)

    @app.get("/stats")
    def stats() -> Response:
        totals = client.get_json(f"{stats_db}/stats")
        pipeline = _pipeline(client, settings.url_of(ORDER_DB), totals["ordersCounted"])
        return jsonify({**totals, **({"pipeline": pipeline} if pipeline else {})})

    @app.get("/orders/<order_id>")
    def order_status(order_id: str) -> Response:
        order_id = parse_order_id(order_id)
        return jsonify(client.get_json(f"{stats_db}/applied/{order_id}"))

    return app

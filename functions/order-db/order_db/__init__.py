"""order-db: the write store. Appends orders (idempotent by order id) and relays `order.recorded`
through a transactional outbox."""

from __future__ import annotations

from functools import partial
from typing import Any

from flask import Flask, Response, jsonify, request

from cqrs_common import events, lifecycle, metrics, tracing
from cqrs_common.client import Client
from cqrs_common.cloudevents_io import Publisher
from cqrs_common.config import Settings
from cqrs_common.db import Database
from cqrs_common.domain import ValidationError
from cqrs_common.receiver import Reply, receive_events
from cqrs_common.roles import ORDER_DB
from cqrs_common.web import create_base_app, problem
from order_db.relay import OutboxRelay
from order_db.store import PARKED, PENDING, SCHEMA, OrderStore

MAX_PAGE = 1000
# The largest id or sequence a store holds (a signed 64-bit integer in SQLite and PostgreSQL);
# a larger number in a URL names nothing, and must not reach the driver (which would overflow).
MAX_ID = 2**63 - 1


def record(store: OrderStore, relay: OutboxRelay, data: Any) -> Reply:
    """`order.placed`: store the order and its `order.recorded` in one transaction."""
    order = events.order_from_data(data)
    # Its trace goes into the outbox with it, so the relayed event continues the order's trace.
    sequence, created = store.record(order, tracing.event_trace_attributes())
    if created:
        relay.wake()
    status = "recorded" if created else "duplicate"
    return {"orderId": order.order_id, "sequence": sequence, "status": status}, (
        201 if created else 200
    )


def relay_on_ping(relay: OutboxRelay, data: Any) -> Reply:
    """A PingSource woke us (maybe from zero): relay now, inside the request, so the revision
    stays up until the pending rows are sent."""
    return relay.relay_due(), 200


def create_app(
    settings: Settings | None = None,
    *,
    store: OrderStore | None = None,
    publisher: Publisher | None = None,
    client: Client | None = None,
) -> Flask:
    settings = settings or Settings.from_env(ORDER_DB.name)
    store = store or OrderStore(Database(settings.database_url, SCHEMA))
    # The outbox is the retry loop, with its own backoff; HTTP-level retries inside it would
    # multiply with the receiver's own retries (and Retry-After sleeps) while it is away.
    client = (client or Client.for_role(settings)).with_retries(0)
    publisher = publisher or Publisher(settings.sink, client, settings.sink_batch_size)
    relay = OutboxRelay(
        store, publisher,
        settings.relay_base_delay, settings.relay_max_delay, settings.relay_poll_interval,
    )  # fmt: skip
    app = create_base_app(settings, __name__, ready=store.db.ping)
    receive_events(app, ORDER_DB.name, {
        events.ORDER_PLACED: partial(record, store, relay),
        events.PING: partial(relay_on_ping, relay),
    })  # fmt: skip
    _add_log_routes(app, store)
    _add_outbox_routes(app, store, relay)
    metrics.register_outbox(store.outbox_stats)
    metrics.register_orders_logged(store.count)
    if settings.relay_enabled:
        # Also relays whatever was left pending before a restart; at exit, hands back its claims.
        lifecycle.on_start(app, relay.start)
        lifecycle.on_stop(app, relay.release)
    return app


def _add_log_routes(app: Flask, store: OrderStore) -> None:
    @app.get("/orders")
    def orders_page() -> Response:
        try:
            after = int(request.args.get("after", 0))
            limit = min(int(request.args.get("limit", 500)), MAX_PAGE)
        except ValueError:
            raise ValidationError("after", "after and limit must be whole numbers") from None
        if not 0 <= after <= MAX_ID or limit < 1:
            raise ValidationError("after", f"after must be from 0 to {MAX_ID} and limit >= 1")
        page = store.page(after, limit)
        return jsonify(
            orders=[events.recorded_to_data(order, seq) for order, seq in page],
            next=page[-1][1] if len(page) == limit else None,
        )

    @app.get("/position")
    def position() -> Response:
        """How far the write side is, and what its outbox holds: the read side compares."""
        outbox = store.outbox_stats()
        return jsonify(
            ordersLogged=store.count(),
            outbox={PENDING: outbox.pending, PARKED: outbox.parked},
        )

    @app.get("/orders/<order_id>")
    def order(order_id: str) -> Response:
        found = store.get(order_id)
        if found is None:
            return problem(404, "Not Found", f"no order {order_id}")
        return jsonify(events.recorded_to_data(*found))


def _add_outbox_routes(app: Flask, store: OrderStore, relay: OutboxRelay) -> None:
    @app.post("/outbox/relay")
    def relay_now() -> Response:
        return jsonify(relay.relay_due())

    @app.get("/outbox")
    def outbox() -> Response:
        status = request.args.get("status", PARKED)
        if status not in (PENDING, PARKED):
            raise ValidationError("status", f"must be {PENDING} or {PARKED}")
        return jsonify(rows=store.outbox(status), counts=store.outbox_counts())

    @app.post("/outbox/<int:row_id>/retry")
    def retry(row_id: int) -> Response:
        if row_id > MAX_ID or not store.retry(row_id):
            return problem(404, "Not Found", f"no parked outbox row {row_id}")
        relay.wake()
        return jsonify(id=row_id, status=PENDING)

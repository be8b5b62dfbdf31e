"""order-db: the write store. Appends orders (idempotent by order id) and relays `order.recorded`
through a transactional outbox."""

from __future__ import annotations

from collections.abc import Mapping

from flask import Flask, Response, jsonify, request

from cqrs_common import events
from cqrs_common.cloudevents_io import BadEventError, Publisher, event_data
from cqrs_common.config import Settings
from cqrs_common.db import Database
from cqrs_common.domain import ValidationError
from cqrs_common.http import Client
from cqrs_common.roles import ORDER_DB
from cqrs_common.web import create_base_app, incoming_event, problem
from order_db.relay import OutboxRelay
from order_db.store import PARKED, PENDING, SCHEMA, OrderStore

MAX_PAGE = 1000
# The largest id or sequence a store holds (a signed 64-bit integer in SQLite and PostgreSQL);
# a larger number in a URL names nothing, and must not reach the driver (which would overflow).
MAX_ID = 2**63 - 1


def create_app(env: Mapping[str, str] | None = None) -> Flask:
    settings = Settings.from_env(ORDER_DB.name, env)
    db = Database(settings.database_url, SCHEMA)
    store = OrderStore(db)
    # The outbox is the retry loop, with its own backoff; HTTP-level retries inside it would
    # multiply with the receiver's own retries (and Retry-After sleeps) while it is away.
    client = Client(settings.http_timeout, retries=0)
    relay = OutboxRelay(
        store,
        Publisher(settings.sink, client),
        settings.relay_base_delay,
        settings.relay_max_delay,
        settings.relay_poll_interval,
    )
    app = create_base_app(settings, __name__, ready=db.ping)
    app.extensions["order_db"] = {"store": store, "relay": relay}

    @app.post("/")
    def receive() -> Response:
        event = incoming_event()
        kind = event.get_type()
        if kind == events.ORDER_PLACED:
            order = events.order_from_data(event_data(event))
            if event.get_subject() not in (None, order.order_id):
                raise ValidationError("subject", "must equal data.orderId")
            sequence, created = store.record(order)
            if created:
                relay.wake()
            return jsonify(
                orderId=order.order_id,
                sequence=sequence,
                status="recorded" if created else "duplicate",
            ), (201 if created else 200)
        if kind == events.PING:
            # A PingSource woke us (maybe from zero): relay now, inside the request, so the
            # revision stays up until the pending rows are sent.
            return jsonify(relay.relay_due())
        raise BadEventError(f"unknown event type {kind!r} for {ORDER_DB.name}")

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

    @app.get("/orders/<order_id>")
    def order(order_id: str) -> Response:
        found = store.get(order_id)
        if found is None:
            return problem(404, "Not Found", f"no order {order_id}")
        return jsonify(events.recorded_to_data(*found))

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

    if settings.relay_enabled:
        relay.start()  # also relays whatever was left pending before a restart
    return app

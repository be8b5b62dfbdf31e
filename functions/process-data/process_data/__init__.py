"""process-data: the projector. Turns each recorded order into a `stats.delta` for the read store,
and can replay the whole order log from order-db."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from cloudevents.core.base import BaseCloudEvent
from flask import Flask, Response, jsonify, request

from cqrs_common import events
from cqrs_common.cloudevents_io import (
    BadEventError,
    Publisher,
    RejectedEventError,
    event_data,
    new_event,
)
from cqrs_common.config import Settings
from cqrs_common.domain import Order, ValidationError, delta_for
from cqrs_common.http import Client
from cqrs_common.roles import PROCESS_DATA
from cqrs_common.web import create_base_app, incoming_event, no_deadline, problem

logger = logging.getLogger(__name__)
REPLAY_PAGE = 500


def delta_event(order: Order) -> BaseCloudEvent:
    """The `stats.delta` an order produces; the same for live delivery and replay."""
    data = events.delta_to_data(delta_for(order))
    return new_event(events.STATS_DELTA, events.source(PROCESS_DATA.name), order.order_id, data)


def replay(
    client: Client, order_db_url: str, publish: Callable[[BaseCloudEvent], None]
) -> dict[str, int]:
    """Send a delta for every order in the log, page by page; the read store skips counted ones."""
    after, sent = 0, 0
    while True:
        page = client.get_json(
            f"{order_db_url}/orders", params={"after": after, "limit": REPLAY_PAGE}
        )
        for data in page["orders"]:
            order, sequence = events.recorded_from_data(data)
            publish(delta_event(order))
            sent, after = sent + 1, sequence
        if page.get("next") is None:
            return {"replayed": sent, "lastSequence": after}


def create_app(env: Mapping[str, str] | None = None) -> Flask:
    settings = Settings.from_env(PROCESS_DATA.name, env)
    # Live deltas get one try: the outbox relay (or the broker) that delivered the event retries
    # it. A replay is an operator's long job with no one to retry each step: it retries itself.
    publish = Publisher(settings.sink, Client(settings.http_timeout, retries=0))
    replay_client = Client(settings.http_timeout, settings.http_retries)
    replay_publish = Publisher(settings.sink, replay_client)
    app = create_base_app(settings, __name__)

    @app.post("/")
    def receive() -> Response:
        event = incoming_event()
        if event.get_type() != events.ORDER_RECORDED:
            raise BadEventError(f"unknown event type {event.get_type()!r} for {PROCESS_DATA.name}")
        order, _sequence = events.recorded_from_data(event_data(event))
        if event.get_subject() not in (None, order.order_id):
            raise ValidationError("subject", "must equal data.orderId")
        try:
            publish(delta_event(order))
        except RejectedEventError as exc:
            # The read store will never take it: say so with a 4xx, so no one retries it.
            return problem(400, "Delta refused by the read store", exc.detail)
        return jsonify(orderId=order.order_id, status="projected")

    @app.post("/replay")
    def replay_route() -> Response:
        logger.info("replay requested", extra={"traceparent": request.headers.get("traceparent")})
        no_deadline()  # as long as the log takes; each call still has its own timeout
        result = replay(replay_client, settings.order_db_url, replay_publish)
        logger.info("replay done: %s orders", result["replayed"])
        return jsonify(result)

    return app

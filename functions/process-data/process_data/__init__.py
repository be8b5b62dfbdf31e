"""process-data: the projector. Turns each recorded order into a `stats.delta` for the read store,
and can replay the whole order log from order-db."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from flask import Flask, Response, jsonify, request

from cqrs_common import events, tracing
from cqrs_common.client import Client
from cqrs_common.cloudevents_io import BadEventError, Publisher, RejectedEventError, new_event
from cqrs_common.config import Settings
from cqrs_common.domain import Order, ValidationError, delta_for
from cqrs_common.receiver import Reply, receive_events
from cqrs_common.roles import ORDER_DB, PROCESS_DATA
from cqrs_common.web import create_base_app, no_deadline

logger = logging.getLogger(__name__)
REPLAY_PAGE = 500
Publish = Callable[[BaseCloudEvent], None]


def delta_event(order: Order) -> BaseCloudEvent:
    """The `stats.delta` an order produces; the same for live delivery and replay."""
    data = events.delta_to_data(delta_for(order))
    return new_event(
        events.STATS_DELTA, events.source(PROCESS_DATA.name), order.order_id, data,
        extensions=tracing.event_trace_attributes(),
    )  # fmt: skip


def project(publish: Publish, data: Any) -> Reply:
    """`order.recorded`: send its delta to the read store."""
    order, _sequence = events.recorded_from_data(data)
    try:
        publish(delta_event(order))
    except RejectedEventError as exc:
        raise _refused(exc) from None
    return _projected(order)


def project_all(publisher: Publisher, datas: Sequence[Any]) -> list[Reply | Exception]:
    """A batch of `order.recorded`s: their deltas go to the read store together (in batches when
    it takes them); each order's reply is its own delta's fate."""
    parsed = [_parse(data) for data in datas]
    orders = [order for order in parsed if isinstance(order, Order)]
    sent = iter(publisher.send_all([delta_event(order) for order in orders]))
    return [item if isinstance(item, Exception) else _sent(item, next(sent)) for item in parsed]


def _sent(order: Order, failure: Exception | None) -> Reply | Exception:
    if failure is None:
        return _projected(order)
    return _refused(failure) if isinstance(failure, RejectedEventError) else failure


def _parse(data: Any) -> Order | ValidationError:
    try:
        return events.recorded_from_data(data)[0]
    except ValidationError as exc:
        return exc


def _refused(exc: RejectedEventError) -> BadEventError:
    # The read store will never take it: say so with a 4xx, so no one retries it.
    return BadEventError(f"the read store refused its delta: {exc.detail}")


def _projected(order: Order) -> Reply:
    return {"orderId": order.order_id, "status": "projected"}, 200


def replay(client: Client, order_db_url: str, publish: Publish) -> dict[str, int]:
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


def create_app(settings: Settings | None = None, *, client: Client | None = None) -> Flask:
    settings = settings or Settings.from_env(PROCESS_DATA.name)
    client = client or Client.for_role(settings)
    # Live deltas get one try: the outbox relay (or the broker) that delivered the event retries
    # it. A replay is an operator's long job with no one to retry each step: it retries itself.
    publish = Publisher(settings.sink, client.with_retries(0), settings.sink_batch_size)
    replay_client = client.with_retries(settings.http_retries)
    replay_publish = Publisher(settings.sink, replay_client)
    app = create_base_app(settings, __name__)
    receive_events(
        app, PROCESS_DATA.name,
        {events.ORDER_RECORDED: partial(project, publish)},
        batch_handlers={events.ORDER_RECORDED: partial(project_all, publish)},
    )  # fmt: skip

    @app.post("/replay")
    def replay_route() -> Response:
        logger.info("replay requested", extra={"traceparent": request.headers.get("traceparent")})
        no_deadline()  # as long as the log takes; each call still has its own timeout
        result = replay(replay_client, settings.url_of(ORDER_DB), replay_publish)
        logger.info("replay done: %s orders", result["replayed"])
        return jsonify(result)

    return app

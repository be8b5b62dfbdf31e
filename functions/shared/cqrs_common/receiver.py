"""Receiving CloudEvents: one route, `POST /` (the Knative convention), and a handler per event
type that is a plain function of the event's data, so it can be tested without HTTP.

A batch (batched content mode) is answered with each event's own result, in order:
`{"results": [{"id", "status", "body"}]}`, status and body being what the event alone would have
been answered. The batch's own status is the most severe of them, so a sender that reads only
the status loses nothing: 503 if any event failed for now (send it again: the receivers are
idempotent), else the first refusal's 4xx if any was refused, else 200. A type may also have a
batch handler, which takes the data of all the batch's events of that type at once (one store
transaction, one call out for all of them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from flask import Flask, Response, current_app, g, jsonify, request

from cqrs_common import events, tracing
from cqrs_common.client import failed_for_now
from cqrs_common.cloudevents_io import (
    BadEventError,
    event_data,
    event_log_fields,
    is_batch,
    read_batch,
    read_event,
)
from cqrs_common.domain import ValidationError

# What a handler answers: a JSON body and the status (2xx once the effect is durable).
Reply = tuple[dict[str, Any], int]
EventHandler = Callable[[Any], Reply]
# Per event, in the order given: its reply, or the exception that refused or failed it. An
# exception raised instead (the store is down) fails the whole batch.
BatchHandler = Callable[[Sequence[Any]], list[Reply | Exception]]


def incoming_event() -> BaseCloudEvent:
    """The CloudEvent of the current request; its attributes go on the request's log line."""
    event = read_event(dict(request.headers), request.get_data(cache=True))
    g.log_fields = event_log_fields(event)
    return event


def check_subject(event: BaseCloudEvent, data: Any) -> None:
    """The shop's events are about an order and name it as their subject: the two must agree
    (the contract). Others (a PingSource's) carry whatever subject their source gives."""
    if event.get_type() not in events.EVENT_TYPES:
        return
    subject = event.get_subject()
    if subject is not None and (not isinstance(data, dict) or data.get("orderId") != subject):
        raise ValidationError("subject", "must equal data.orderId")


def receive_events(
    app: Flask,
    role: str,
    handlers: Mapping[str, EventHandler],
    batch_handlers: Mapping[str, BatchHandler] | None = None,
) -> None:
    """Take the given event types on `POST /`, one per request or in batches; any other type is
    a 400 that changes nothing."""
    receiver = _Receiver(role, handlers, batch_handlers or {})

    @app.post("/")
    def receive() -> tuple[Response, int]:
        if is_batch(request.headers):
            results = receiver.batch(request.get_data(cache=True))
            return jsonify(results=results), batch_status([r["status"] for r in results])
        event = incoming_event()
        body, status = receiver.one(event)
        return jsonify(body), status


def batch_status(statuses: Sequence[int]) -> int:
    """A batch's status from its events': the most severe (the module's docstring)."""
    if any(failed_for_now(status) for status in statuses):
        return 503
    return next((status for status in statuses if status >= 400), 200)


class _Receiver:
    def __init__(
        self,
        role: str,
        handlers: Mapping[str, EventHandler],
        batch_handlers: Mapping[str, BatchHandler],
    ) -> None:
        self.role = role
        self.handlers = handlers
        self.batch_handlers = batch_handlers

    def _checked_data(self, event: BaseCloudEvent) -> Any:
        if event.get_type() not in self.handlers:
            raise BadEventError(f"unknown event type {event.get_type()!r} for {self.role}")
        tracing.link_event(event)  # a relayed event links back to the order's own span
        data = event_data(event)
        check_subject(event, data)
        return data

    def one(self, event: BaseCloudEvent) -> Reply:
        data = self._checked_data(event)
        return self.handlers[event.get_type()](data)

    def batch(self, body: bytes) -> list[dict[str, Any]]:
        """Each event of the batch handled, its result in its place."""
        parsed = read_batch(body)
        g.log_fields = {"ce_batch": len(parsed)}
        outcomes: list[Reply | Exception | None] = [None] * len(parsed)
        by_type: dict[str, list[tuple[int, Any]]] = {}
        for index, event in enumerate(parsed):
            try:
                if isinstance(event, Exception):
                    raise event
                data = self._checked_data(event)
            except (BadEventError, ValidationError) as exc:
                outcomes[index] = exc
                continue
            by_type.setdefault(event.get_type(), []).append((index, data))
        for event_type, items in by_type.items():
            for (index, _), outcome in zip(
                items, self._handle(event_type, [data for _, data in items]), strict=True
            ):
                outcomes[index] = outcome
        return [_result(event, outcome) for event, outcome in zip(parsed, outcomes, strict=True)]

    def _handle(self, event_type: str, datas: list[Any]) -> list[Reply | Exception]:
        batch_handler = self.batch_handlers.get(event_type)
        if batch_handler is not None:
            return batch_handler(datas)
        handler = self.handlers[event_type]
        outcomes: list[Reply | Exception] = []
        for data in datas:
            try:
                outcomes.append(handler(data))
            except Exception as exc:  # answered for this event alone, as the error handlers do
                outcomes.append(exc)
        return outcomes


def _result(event: BaseCloudEvent | Exception, outcome: Reply | Exception | None) -> dict[str, Any]:
    event_id = None if isinstance(event, Exception) else event.get_id()
    if isinstance(outcome, Exception):
        # The answer the event alone would have had: the app's own error handlers build it.
        response = current_app.make_response(current_app.handle_user_exception(outcome))
        return {"id": event_id, "status": response.status_code, "body": response.get_json()}
    assert outcome is not None  # every event got an outcome above
    body, status = outcome
    return {"id": event_id, "status": status, "body": body}

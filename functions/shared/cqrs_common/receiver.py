"""Receiving CloudEvents: one route, `POST /` (the Knative convention), and a handler per event
type that is a plain function of the event's data, so it can be tested without HTTP."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from flask import Flask, Response, g, jsonify, request

from cqrs_common import events, tracing
from cqrs_common.cloudevents_io import BadEventError, event_data, event_log_fields, read_event
from cqrs_common.domain import ValidationError

# What a handler answers: a JSON body and the status (2xx once the effect is durable).
Reply = tuple[dict[str, Any], int]
EventHandler = Callable[[Any], Reply]


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


def receive_events(app: Flask, role: str, handlers: Mapping[str, EventHandler]) -> None:
    """Take the given event types on `POST /`; any other type is a 400 that changes nothing."""

    @app.post("/")
    def receive() -> tuple[Response, int]:
        event = incoming_event()
        handler = handlers.get(event.get_type())
        if handler is None:
            raise BadEventError(f"unknown event type {event.get_type()!r} for {role}")
        tracing.link_event(event)  # a relayed event links back to the order's own span
        data = event_data(event)
        check_subject(event, data)
        body, status = handler(data)
        return jsonify(body), status

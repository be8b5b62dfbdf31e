"""CloudEvents over HTTP: read an event from a request (binary or structured), send one (binary)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.http import HTTPMessage, from_http_event, to_binary_event
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.v1.event import CloudEvent

from cqrs_common.client import Client, UpstreamError

logger = logging.getLogger(__name__)


class BadEventError(ValueError):
    """The request is not a valid CloudEvent: answered 400, which no broker retries."""


class UnsupportedEventModeError(BadEventError):
    """A content mode this receiver does not take (batched events): answered 415."""


class RejectedEventError(Exception):
    """The receiver refused the event for good (a 4xx other than the retryable ones)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"refused with {status}: {detail}")
        self.status = status
        self.detail = detail


# Knative retries these 4xx (pkg/kncloudevents/retries.go), so we treat them as transient too.
RETRYABLE_4XX = frozenset({404, 408, 409, 429})


def read_event(headers: dict[str, str], body: bytes) -> BaseCloudEvent:
    """Parse a CloudEvent from HTTP; raises BadEventError for anything malformed."""
    headers = {name.lower(): value for name, value in headers.items()}
    if headers.get("content-type", "").lower().startswith("application/cloudevents-batch"):
        # Knative delivers one event per request; a batch would need all-or-nothing semantics
        # that no sender here relies on.
        raise UnsupportedEventModeError("batched CloudEvents are not accepted; send one event")
    if not any(name.startswith("ce-") for name in headers) and not headers.get(
        "content-type", ""
    ).startswith("application/cloudevents"):
        raise BadEventError("not a CloudEvent: no ce- headers and not application/cloudevents+json")
    try:
        event = from_http_event(HTTPMessage(headers=headers, body=body))
    except (BaseCloudEventException, ValueError, TypeError, KeyError) as exc:
        raise BadEventError(f"malformed CloudEvent: {exc}") from None
    except RecursionError:
        raise BadEventError("malformed CloudEvent: JSON nested too deeply") from None
    if event.get_specversion() != "1.0":
        raise BadEventError("only CloudEvents 1.0 is accepted")
    return event


def event_data(event: BaseCloudEvent) -> Any:
    """The event's data as JSON, with decimals kept exact."""
    data = event.get_data()
    if isinstance(data, (bytes, str)):
        try:
            return json.loads(data, parse_float=Decimal)
        except ValueError:
            raise BadEventError("event data is not JSON") from None
        except RecursionError:
            raise BadEventError("event data is nested too deeply") from None
    return data


def new_event(
    event_type: str,
    source: str,
    subject: str,
    data: dict[str, Any],
    event_id: str | None = None,
    extensions: Mapping[str, str] | None = None,
) -> CloudEvent:
    """A CloudEvent 1.0 with JSON data; the SDK fills in time, specversion and (unless given) id.
    `extensions`: the Distributed Tracing extension (traceparent, tracestate) of its origin."""
    attributes = {
        **(extensions or {}),
        "type": event_type,
        "source": source,
        "subject": subject,
        "datacontenttype": "application/json",
    }
    if event_id is not None:
        attributes["id"] = event_id  # a redelivery keeps its id, so receivers can tell
    return CloudEvent(attributes=attributes, data=data)


def event_log_fields(event: BaseCloudEvent) -> dict[str, Any]:
    return {
        "ce_id": event.get_id(),
        "ce_type": event.get_type(),
        "ce_source": event.get_source(),
        "subject": event.get_subject(),
    }


class Publisher:
    """Sends events to one sink (K_SINK) in binary mode; the sink is a role or a broker."""

    def __init__(self, sink: str | None, client: Client) -> None:
        self.sink = sink
        self.client = client

    def __call__(self, event: BaseCloudEvent) -> None:
        """Deliver or raise: UpstreamError when worth retrying, RejectedEventError when not."""
        if not self.sink:
            raise UpstreamError("K_SINK", "no sink configured for the events this role produces")
        message = to_binary_event(event)
        response = self.client.request(
            "POST", self.sink, headers=message.headers, data=message.body
        )
        status = response.status_code
        if 200 <= status < 300:
            return
        detail = _detail(response.text)
        if 400 <= status < 500 and status not in RETRYABLE_4XX:
            raise RejectedEventError(status, detail)
        raise UpstreamError(self.sink, f"answered {status}: {detail}", status)


def _detail(body: str) -> str:
    """What a refusal says: a problem document's `detail`, else the start of the body."""
    try:
        detail = json.loads(body).get("detail")
    except (ValueError, AttributeError):
        detail = None
    return detail if isinstance(detail, str) else body[:300]

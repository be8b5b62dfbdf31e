"""CloudEvents over HTTP: read an event from a request (binary or structured) or a batch of them
(batched content mode), send one (binary) or a batch.

A batch is answered with one result per event, in the batch's order: the status and body the
event alone would have been answered, so each event keeps its own fate (a refused one is parked,
a failed one retried, the others done); the batch's own status is the most severe of them
(cqrs_common.receiver). An answer without results (a receiver that is not one of the roles)
means what its status says, for every event.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.http import HTTPMessage, from_http_event, to_binary_event
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from cqrs_common.client import Client, UpstreamError, failed_for_now
from cqrs_common.limits import MAX_BODY_BYTES

logger = logging.getLogger(__name__)


class BadEventError(ValueError):
    """The request is not a valid CloudEvent: answered 400, which no broker retries."""


class UnsupportedEventModeError(BadEventError):
    """A content mode this receiver does not take: answered 415."""


class RejectedEventError(Exception):
    """The receiver refused the event for good (a 4xx other than the retryable ones)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"refused with {status}: {detail}")
        self.status = status
        self.detail = detail


BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
# A receiver that answered 415 to a batch (an older version, mid-rollout) gets single events
# for this long before a batch is tried again.
BATCH_REFUSED_FOR = 60.0
_FORMAT = JSONFormat()

# What a receiver answers for one event of a batch: its status and body, or what failed it.
Outcome = Exception | None


def is_batch(headers: Mapping[str, str]) -> bool:
    """`headers`: a request's (names case-insensitive) or a dict with lower-case names."""
    return headers.get("content-type", "").lower().startswith(BATCH_CONTENT_TYPE)


def read_event(headers: dict[str, str], body: bytes) -> BaseCloudEvent:
    """Parse a CloudEvent from HTTP; raises BadEventError for anything malformed."""
    headers = {name.lower(): value for name, value in headers.items()}
    if is_batch(headers):
        raise UnsupportedEventModeError("a batch of CloudEvents where one event was expected")
    if not any(name.startswith("ce-") for name in headers) and not headers.get(
        "content-type", ""
    ).startswith("application/cloudevents"):
        raise BadEventError("not a CloudEvent: no ce- headers and not application/cloudevents+json")
    if headers.get("content-type", "").lower().startswith(STRUCTURED_CONTENT_TYPE) and (
        body.lstrip()[:1] != b"{"
    ):
        # The SDK reads any JSON value here and fails with an AttributeError on anything but
        # an object; a JSON text that starts with "{" is an object or malformed (ValueError).
        raise BadEventError("a structured CloudEvent must be a JSON object")
    try:
        event = from_http_event(HTTPMessage(headers=headers, body=body))
    except (BaseCloudEventException, ValueError, TypeError, KeyError) as exc:
        raise BadEventError(f"malformed CloudEvent: {exc}") from None
    except RecursionError:
        raise BadEventError("malformed CloudEvent: JSON nested too deeply") from None
    if event.get_specversion() != "1.0":
        raise BadEventError("only CloudEvents 1.0 is accepted")
    return event


def read_batch(body: bytes) -> list[BaseCloudEvent | BadEventError]:
    """The events of a batch (a JSON array of structured events), each parsed on its own: a
    malformed one is its BadEventError, in its place, and does not spoil the others."""
    try:
        items = json.loads(body)
    except ValueError:
        raise BadEventError("a batch must be a JSON array of CloudEvents") from None
    except RecursionError:
        raise BadEventError("malformed batch: JSON nested too deeply") from None
    if not isinstance(items, list):
        raise BadEventError("a batch must be a JSON array of CloudEvents")
    headers = {"content-type": STRUCTURED_CONTENT_TYPE}
    parsed: list[BaseCloudEvent | BadEventError] = []
    for item in items:
        if not isinstance(item, dict):
            parsed.append(BadEventError("each element of a batch must be a CloudEvent object"))
            continue
        try:
            parsed.append(read_event(headers, json.dumps(item).encode()))
        except BadEventError as exc:
            parsed.append(exc)
    return parsed


def batch_body(events: Sequence[BaseCloudEvent]) -> bytes:
    """A batch in the JSON event format's batched mode."""
    return _joined([_FORMAT.write(event) for event in events])


def _joined(encoded: Sequence[bytes]) -> bytes:
    return b"[" + b",".join(encoded) + b"]"


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
    """Sends events to one sink (K_SINK), one by one in binary mode, or up to `batch_size` per
    request in batched mode (`send_all`); the sink is a role or a broker (which takes one)."""

    def __init__(self, sink: str | None, client: Client, batch_size: int = 1) -> None:
        self.sink = sink
        self.client = client
        self.batch_size = batch_size
        self._singles_until = 0.0  # monotonic time until which the sink gets no batches

    def __call__(self, event: BaseCloudEvent) -> None:
        """Deliver or raise: UpstreamError when worth retrying, RejectedEventError when not."""
        message = to_binary_event(event)
        response = self.client.request(
            "POST", self._sink(), headers=message.headers, data=message.body
        )
        failure = _failure(self._sink(), response.status_code, response.text)
        if failure is not None:
            raise failure

    def send_all(self, events: Sequence[BaseCloudEvent]) -> list[Outcome]:
        """Deliver each event; its outcome in its place: None once the sink took it, else the
        error `__call__` would raise for it. Batches when the sink takes them, in requests of at
        most `batch_size` events and MAX_BODY_BYTES; a whole-request failure is every event's."""
        if self.batch_size <= 1 or len(events) <= 1 or time.monotonic() < self._singles_until:
            return [self._send_one(event) for event in events]
        encoded = [_FORMAT.write(event) for event in events]
        outcomes: list[Outcome] = []
        for chunk in self._chunks(encoded):
            outcomes += self._send_batch([events[i] for i in chunk], [encoded[i] for i in chunk])
        return outcomes

    def _sink(self) -> str:
        if not self.sink:
            raise UpstreamError("K_SINK", "no sink configured for the events this role produces")
        return self.sink

    def _send_one(self, event: BaseCloudEvent) -> Outcome:
        try:
            self(event)
        except (RejectedEventError, UpstreamError) as exc:
            return exc
        return None

    def _chunks(self, encoded: list[bytes]) -> list[list[int]]:
        """Indexes of the events per request: at most batch_size, and a body that fits."""
        chunks: list[list[int]] = [[]]
        size = 2
        for index, body in enumerate(encoded):
            if chunks[-1] and (
                len(chunks[-1]) >= self.batch_size or size + len(body) + 1 > MAX_BODY_BYTES
            ):
                chunks.append([])
                size = 2
            chunks[-1].append(index)
            size += len(body) + 1
        return chunks

    def _send_batch(self, events: list[BaseCloudEvent], encoded: list[bytes]) -> list[Outcome]:
        if len(events) == 1:
            return [self._send_one(events[0])]
        try:
            response = self.client.request(
                "POST", self._sink(), headers={"Content-Type": BATCH_CONTENT_TYPE},
                data=_joined(encoded),
            )  # fmt: skip
        except UpstreamError as exc:
            return [exc] * len(events)
        if response.status_code == 415:
            logger.warning("%s takes no batches: sending one event per request", self.sink)
            self._singles_until = time.monotonic() + BATCH_REFUSED_FOR
            return [self._send_one(event) for event in events]
        outcomes = _batch_outcomes(self._sink(), response.text, len(events))
        if outcomes is not None:
            return outcomes
        return [_failure(self._sink(), response.status_code, response.text)] * len(events)


def _failure(sink: str, status: int, text: str) -> Exception | None:
    """What an answer means for the event(s) sent: None (taken), or the error to report."""
    if 200 <= status < 300:
        return None
    detail = _detail(text)
    if 400 <= status < 500 and not failed_for_now(status):
        return RejectedEventError(status, detail)
    return UpstreamError(sink, f"answered {status}: {detail}", status)


def _batch_outcomes(sink: str, text: str, count: int) -> list[Outcome] | None:
    """Each event's outcome from the results of a batch's answer, whatever the batch's own
    status; None when the answer has none (a receiver that is not one of the shop's roles: its
    status then stands for every event). Results that do not match the batch are all retried."""
    try:
        results = json.loads(text).get("results") if text else None
    except (ValueError, AttributeError):
        results = None
    if results is None:
        return None
    if not isinstance(results, list) or len(results) != count:
        return [UpstreamError(sink, "answered a batch with results that do not match it")] * count
    outcomes: list[Outcome] = []
    for result in results:
        status = result.get("status") if isinstance(result, dict) else None
        if not isinstance(status, int):
            outcomes.append(UpstreamError(sink, "answered a batch without an event's status"))
            continue
        body = result.get("body")
        outcomes.append(_failure(sink, status, json.dumps(body) if body is not None else ""))
    return outcomes


def _detail(body: str) -> str:
    """What a refusal says: a problem document's `detail`, else the start of the body."""
    try:
        detail = json.loads(body).get("detail")
    except (ValueError, AttributeError):
        detail = None
    return detail if isinstance(detail, str) else body[:300]

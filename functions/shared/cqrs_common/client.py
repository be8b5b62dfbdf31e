"""Calls between roles: timeouts within the request's budget, pooled connections, bounded retries
at the edge only, trace headers passed on.

Calls go through urllib3's keep-alive pools (cqrs_common.transport), the engine under requests
without its session layer: requests' own stack (hooks, cookie jars, proxy lookups from the
environment, its adapter's header copies) costs more CPU per call and does nothing the shop uses
(docs/benchmarks.md has both measured). A test gives a Client a transport of its own (one that
hands each call to an app in the same process).

What a caller is told follows what the shop can know: a try refused before it reached the peer
(no connection) is "unavailable" (UpstreamError, a 503 when answered); once a try may have
reached the peer and no answer says what became of it (no answer in time, a broken answer, a
504), the outcome is unknown, and the call's failure says so (status 504) whatever the later
tries gave: a 503 would invite a client to place again what may have been stored.
"""

from __future__ import annotations

import copy
import json as jsonlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from cqrs_common import tracing
from cqrs_common.config import Settings
from cqrs_common.deadline import MIN_CALL, Deadline, outbound_headers
from cqrs_common.tokens import outbound_credentials
from cqrs_common.transport import PooledTransport, Response, Transport, TransportError

logger = logging.getLogger(__name__)

# Headers that join one request's spans across roles (W3C trace context, Istio's request id, B3).
TRACE_HEADERS = (
    "traceparent",
    "tracestate",
    "x-request-id",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
)
# What an answer's status tells its sender, in one place. A call between roles is worth another
# try on these: the peer is starting, overloaded or briefly away (Knative's activator answers
# 502/503 while a revision scales from zero).
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# An event's delivery has failed for now (sent again later, never parked) on any 5xx and on the
# 4xx that Knative's own senders retry (pkg/kncloudevents/retries.go); any other 4xx refuses it.
RETRYABLE_4XX = frozenset({404, 408, 409, 429})


def failed_for_now(status: int) -> bool:
    """An event answered with `status` is to be sent again later (a batch's own status too)."""
    return status >= 500 or status in RETRYABLE_4XX


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class UpstreamError(Exception):
    """Another role could not be reached, or answered with an error we cannot pass on."""

    def __init__(self, target: str, detail: str, status: int | None = None) -> None:
        super().__init__(f"{target}: {detail}")
        self.target = target
        self.detail = detail
        self.status = status


class DeadlineExceededError(UpstreamError):
    """The request's budget ran out before another role answered: answered 504."""

    def __init__(self, target: str, detail: str) -> None:
        super().__init__(target, detail, 504)


class OutcomeUnknownError(UpstreamError):
    """A try may have reached the peer and nothing says what became of it: answered 504."""

    def __init__(self, target: str, detail: str) -> None:
        super().__init__(target, f"{detail}; a try may have taken effect", 504)


def current_deadline() -> Deadline | None:
    """The deadline of the request being served (set by cqrs_common.web), if any."""
    try:
        from flask import g, has_request_context
    except ImportError:  # pragma: no cover - flask is always installed in the roles
        return None
    if not has_request_context():
        return None
    return g.get("deadline")


def forward_headers() -> dict[str, str]:
    """The trace headers of the request being served, if any, to put on an outbound call."""
    return tracing.served_headers(TRACE_HEADERS)


class Client:
    """A pooled HTTP session that retries transient failures with bounded exponential backoff,
    within the budget of the request being served (cqrs_common.deadline).

    Every method is retried, POST included: every receiver here is idempotent by order id. Only
    the edge of a chain retries (the dispatcher, the outbox relay); a role in the middle makes
    one try (retries=0), so a failure deep down costs the edge's tries, not their product.
    """

    def __init__(
        self,
        timeout: tuple[float, float] = (2.0, 10.0),
        retries: int = 3,
        backoff: float = 0.1,
        pool_size: int = 32,
        transport: Transport | None = None,
    ) -> None:
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        # No proxies between roles, and no retries below this class: they would multiply with
        # its own.
        self.transport: Transport = transport or PooledTransport(pool_size)
        # Who this role is to the one it calls: a token per target (cqrs_common.tokens).
        self.credentials: Callable[[str], Mapping[str, str]] | None = None

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        data: bytes | str | None = None,
        params: Mapping[str, Any] | None = None,
        timeout: tuple[float, float] | None = None,
        deadline: Deadline | None = None,
    ) -> Response:
        """One call with retries: connection failures and RETRY_STATUSES, at most `retries` more
        tries, the first at once, then backoff doubling up to 2 s (or the peer's Retry-After),
        never past the deadline (the given one, else the served request's). Each try carries the
        time it is given and the moment its caller stops waiting (cqrs_common.deadline). The last
        answer is returned whatever its status, unless an earlier try's outcome is unknown
        (OutcomeUnknownError); DeadlineExceededError when the budget ran out first."""
        call = _Call.of(method, url, headers, json, data, params)
        if self.credentials is not None:
            try:
                call.headers.update(self.credentials(url))
            except FileNotFoundError as exc:  # not projected (yet): worth another try later
                raise UpstreamError(url, str(exc)) from None
        deadline = deadline or current_deadline()
        connect, read = timeout or self.timeout
        unknown = False  # whether a try may have taken effect without an answer saying so
        safe = call.method in SAFE_METHODS  # a read has no effect to be unknown
        for attempt in range(self.retries + 1):
            budget = read if deadline is None else min(read, deadline.for_call())
            if budget < MIN_CALL:
                raise DeadlineExceededError(call.url, "no time left in the request's budget")
            call.headers.update(outbound_headers(budget))
            delay = 0.0 if attempt == 0 else min(2.0, self.backoff * 2**attempt)
            last = attempt == self.retries
            try:
                response = self.transport.urlopen(
                    call.method, call.url, call.body, call.headers, (min(connect, budget), budget)
                )
            except TransportError as exc:
                if exc.timed_out and budget < read:
                    detail = "no answer within the request's budget"
                    raise DeadlineExceededError(call.url, detail) from None
                unknown = unknown or (exc.sent and not safe)
                if last or not _time_for(deadline, delay):
                    if unknown:
                        raise OutcomeUnknownError(call.url, exc.detail) from None
                    raise UpstreamError(call.url, f"unreachable ({exc.detail})") from None
            else:
                settled = response.status_code not in RETRY_STATUSES
                unknown = unknown or (response.status_code == 504 and not safe)
                if not settled:
                    delay = _retry_after(response, delay)
                if settled or last or not _time_for(deadline, delay):
                    if not settled and unknown and response.status_code != 504:
                        detail = f"answered {response.status_code}"
                        raise OutcomeUnknownError(call.url, detail)
                    return response
            time.sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises

    def with_retries(self, retries: int) -> Client:
        """The same connections under another retry rule: each role decides how often it tries
        (cqrs_common.config), whoever built the transport (a test builds one of its own)."""
        other = copy.copy(self)
        other.retries = retries
        return other

    @classmethod
    def for_role(cls, settings: Settings) -> Client:
        """A role's client: its timeouts, and its tokens when the cluster checks callers."""
        client = cls(settings.http_timeout)
        client.credentials = outbound_credentials(settings)
        return client

    def get_json(self, url: str, **kwargs: Any) -> Any:
        response = self.request("GET", url, **kwargs)
        if response.status_code != 200:
            raise UpstreamError(url, f"answered {response.status_code}", response.status_code)
        try:
            return response.json()
        except ValueError:
            raise UpstreamError(url, "answered something that is not JSON") from None

    def close(self) -> None:
        self.transport.close()


@dataclass
class _Call:
    """One outbound request as sent on every try (the budget header changes per try)."""

    method: str
    url: str
    body: bytes | None
    headers: dict[str, str]

    @classmethod
    def of(
        cls,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        json: Any,
        data: bytes | str | None,
        params: Mapping[str, Any] | None,
    ) -> _Call:
        # Outbound spans and their traceparent (replacing a forwarded one) come from OpenTelemetry's
        # urllib3 instrumentation when tracing is on (cqrs_common.tracing).
        sent = {**forward_headers(), **(headers or {})}
        if json is not None:
            data = jsonlib.dumps(json).encode()
            sent.setdefault("Content-Type", "application/json")
        if params:
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"
        return cls(method, url, data.encode() if isinstance(data, str) else data, sent)


def _retry_after(response: Response, delay: float) -> float:
    """The peer's own Retry-After (seconds, at most 10) on a 429 or 503, else our backoff."""
    retry_after = response.headers.get("Retry-After", "")
    if response.status_code in (429, 503) and retry_after.isdigit():
        return min(float(retry_after[:3]), 10.0)
    return delay


def _time_for(deadline: Deadline | None, delay: float) -> bool:
    """Whether another try still fits in the budget after waiting `delay`."""
    return deadline is None or deadline.for_call() - delay >= MIN_CALL

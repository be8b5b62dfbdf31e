"""Calls between roles: timeouts within the request's budget, pooled connections, bounded retries
at the edge only, trace headers passed on.

Plain-HTTP calls go through a small keep-alive pool of http.client connections: a call through
requests' full stack cost about ten times the CPU, and every order makes four of these calls.
The answer is still a requests.Response, and a transport mounted on the session (the in-process
tests mount one) still gets every call.
"""

from __future__ import annotations

import copy
import http.client
import json as jsonlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from requests.adapters import BaseAdapter, HTTPAdapter
from requests.structures import CaseInsensitiveDict

from cqrs_common import tracing
from cqrs_common.config import Settings
from cqrs_common.deadline import BUDGET_HEADER, MIN_CALL, Deadline
from cqrs_common.tokens import outbound_credentials

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
# Worth another try: the peer is starting, overloaded or briefly away (Knative's activator
# answers 502/503 while a revision scales from zero).
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


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


class ConnectionPool(BaseAdapter):
    """Keep-alive http.client connections per host, for plain HTTP between the roles."""

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self.maxsize = maxsize
        self._idle: dict[tuple[str, int], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    def _take(self, key: tuple[str, int]) -> http.client.HTTPConnection | None:
        with self._lock:
            idle = self._idle.get(key)
            return idle.pop() if idle else None

    def _give_back(self, key: tuple[str, int], conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self.maxsize:
                idle.append(conn)
                return
        conn.close()

    def urlopen(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: Mapping[str, str],
        timeout: tuple[float, float],
    ) -> requests.Response:
        """One exchange; raises OSError or http.client.HTTPException when it fails."""
        parts = urlsplit(url)
        key = (parts.hostname or "", parts.port or 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn = self._take(key)
        reused = conn is not None
        while True:
            if conn is None:
                conn = http.client.HTTPConnection(key[0], key[1], timeout=timeout[0])
                conn.connect()
            conn.sock.settimeout(timeout[1])
            try:
                conn.request(method, path, body=body, headers=dict(headers))
                answer = conn.getresponse()
                content = answer.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if not reused or isinstance(exc, TimeoutError):
                    raise
                # The peer closed an idle keep-alive connection: try once on a new one.
                conn, reused = None, False
                continue
            break
        if answer.will_close:
            conn.close()
        else:
            self._give_back(key, conn)
        response = requests.Response()
        response.status_code = answer.status
        response.reason = answer.reason
        response.headers = CaseInsensitiveDict(answer.getheaders())
        response._content = content
        response.url = url
        return response

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        """The requests transport API, for a caller that goes through the session itself."""
        timeout = kwargs.get("timeout") or (2.0, 10.0)
        if not isinstance(timeout, tuple):
            timeout = (timeout, timeout)
        body = request.body.encode() if isinstance(request.body, str) else request.body
        response = self.urlopen(
            request.method or "GET", request.url or "", body, request.headers, timeout
        )
        response.request = request
        return response

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


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
    ) -> None:
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.session = requests.Session()
        self.session.trust_env = False  # no proxies between roles; and reading them costs
        # No retries below this class: they would multiply with its own.
        self.session.mount("https://", HTTPAdapter(pool_connections=8, pool_maxsize=pool_size))
        self.session.mount("http://", ConnectionPool(pool_size))
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
    ) -> requests.Response:
        """One call with retries: connection failures and RETRY_STATUSES, at most `retries` more
        tries, the first at once, then backoff doubling up to 2 s (or the peer's Retry-After),
        never past the deadline (the given one, else the served request's). Each try carries the
        time it is given in X-Request-Timeout-Ms. The last answer is returned whatever its
        status; DeadlineExceededError when the budget ran out first."""
        call = _Call.of(method, url, headers, json, data, params)
        if self.credentials is not None:
            try:
                call.headers.update(self.credentials(url))
            except FileNotFoundError as exc:  # not projected (yet): worth another try later
                raise UpstreamError(url, str(exc)) from None
        deadline = deadline or current_deadline()
        connect, read = timeout or self.timeout
        for attempt in range(self.retries + 1):
            budget = read if deadline is None else min(read, deadline.for_call())
            if budget < MIN_CALL:
                raise DeadlineExceededError(call.url, "no time left in the request's budget")
            call.headers[BUDGET_HEADER] = str(int(budget * 1000))
            delay = 0.0 if attempt == 0 else min(2.0, self.backoff * 2**attempt)
            last = attempt == self.retries
            try:
                response = self._send(call, (min(connect, budget), budget))
            except (OSError, http.client.HTTPException, requests.RequestException) as exc:
                if isinstance(exc, (TimeoutError, requests.Timeout)) and budget < read:
                    detail = "no answer within the request's budget"
                    raise DeadlineExceededError(call.url, detail) from None
                if last or not _time_for(deadline, delay):
                    raise UpstreamError(call.url, f"unreachable ({type(exc).__name__})") from None
            else:
                if response.status_code not in RETRY_STATUSES or last:
                    return response
                delay = _retry_after(response, delay)
                if not _time_for(deadline, delay):
                    return response
            time.sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _send(self, call: _Call, timeout: tuple[float, float]) -> requests.Response:
        """One try, in a CLIENT span of its own when tracing is on (its traceparent replaces
        the one forwarded from the served request)."""
        transport = self.session.get_adapter(call.url)
        with tracing.outbound_span(call.method, call.url) as trace_headers:
            headers = {**call.headers, **trace_headers}
            if isinstance(transport, ConnectionPool):
                response = transport.urlopen(call.method, call.url, call.body, headers, timeout)
            else:
                response = self.session.request(
                    call.method, call.url, data=call.body, headers=headers, timeout=timeout
                )
            tracing.record_status(response.status_code)
        return response

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
        self.session.close()


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
        sent = {**forward_headers(), **(headers or {})}
        if json is not None:
            data = jsonlib.dumps(json).encode()
            sent.setdefault("Content-Type", "application/json")
        if params:
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"
        return cls(method, url, data.encode() if isinstance(data, str) else data, sent)


def _retry_after(response: requests.Response, delay: float) -> float:
    """The peer's own Retry-After (seconds, at most 10) on a 429 or 503, else our backoff."""
    retry_after = response.headers.get("Retry-After", "")
    if response.status_code in (429, 503) and retry_after.isdigit():
        return min(float(retry_after[:3]), 10.0)
    return delay


def _time_for(deadline: Deadline | None, delay: float) -> bool:
    """Whether another try still fits in the budget after waiting `delay`."""
    return deadline is None or deadline.for_call() - delay >= MIN_CALL

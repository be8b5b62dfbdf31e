"""Calls between roles: timeouts, pooled connections, bounded retries, trace headers passed on.

Plain-HTTP calls go through a small keep-alive pool of http.client connections: a call through
requests' full stack cost about ten times the CPU, and every order makes four of these calls.
The answer is still a requests.Response, and a transport mounted on the session (the in-process
tests mount one) still gets every call.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from requests.adapters import BaseAdapter, HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.util.retry import Retry

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


def forward_headers() -> dict[str, str]:
    """The trace headers of the request being served, if any, to put on an outbound call."""
    try:
        from flask import has_request_context, request
    except ImportError:  # pragma: no cover - flask is always installed in the roles
        return {}
    if not has_request_context():
        return {}
    return {name: request.headers[name] for name in TRACE_HEADERS if name in request.headers}


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
    """A pooled HTTP session that retries transient failures with bounded exponential backoff.

    Every method is retried, POST included: every receiver here is idempotent by order id.
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
        retry = Retry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            allowed_methods=None,
            status_forcelist=RETRY_STATUSES,
            backoff_factor=backoff,
            backoff_max=2.0,
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        self.session.mount(
            "https://", HTTPAdapter(pool_connections=8, pool_maxsize=pool_size, max_retries=retry)
        )
        self.session.mount("http://", ConnectionPool(pool_size))

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        headers = {**forward_headers(), **kwargs.pop("headers", {})}
        pool = self.session.get_adapter(url)
        if isinstance(pool, ConnectionPool):
            return self._fast_request(pool, method, url, headers, **kwargs)
        try:
            return self.session.request(
                method, url, headers=headers, timeout=kwargs.pop("timeout", self.timeout), **kwargs
            )
        except requests.RequestException as exc:
            raise UpstreamError(url, f"unreachable ({type(exc).__name__})") from None

    def _fast_request(
        self,
        pool: ConnectionPool,
        method: str,
        url: str,
        headers: dict[str, str],
        *,
        json: Any = None,
        data: bytes | str | None = None,
        params: Mapping[str, Any] | None = None,
        timeout: tuple[float, float] | None = None,
    ) -> requests.Response:
        """The same retry rule as urllib3's Retry above: connection failures and RETRY_STATUSES,
        at most `retries` more tries, the first at once, then backoff doubling up to 2 s (or
        the peer's Retry-After); the last answer is returned whatever its status."""
        if json is not None:
            data = jsonlib.dumps(json).encode()
            headers.setdefault("Content-Type", "application/json")
        body = data.encode() if isinstance(data, str) else data
        if params:
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"
        timeout = timeout or self.timeout
        for attempt in range(self.retries + 1):
            delay = 0.0 if attempt == 0 else min(2.0, self.backoff * 2**attempt)
            try:
                response = pool.urlopen(method, url, body, headers, timeout)
            except (OSError, http.client.HTTPException) as exc:
                if attempt == self.retries:
                    raise UpstreamError(url, f"unreachable ({type(exc).__name__})") from None
            else:
                if response.status_code not in RETRY_STATUSES or attempt == self.retries:
                    return response
                retry_after = response.headers.get("Retry-After", "")
                if response.status_code in (429, 503) and retry_after.isdigit():
                    delay = min(float(retry_after), 10.0)
            time.sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises

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

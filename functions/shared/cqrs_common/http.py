"""Calls between roles: timeouts, pooled connections, bounded retries, trace headers passed on."""

from __future__ import annotations

import logging
from typing import Any

import requests
from requests.adapters import HTTPAdapter
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
        self.session = requests.Session()
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
        adapter = HTTPAdapter(pool_connections=8, pool_maxsize=pool_size, max_retries=retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        headers = {**forward_headers(), **kwargs.pop("headers", {})}
        try:
            return self.session.request(
                method, url, headers=headers, timeout=kwargs.pop("timeout", self.timeout), **kwargs
            )
        except requests.RequestException as exc:
            raise UpstreamError(url, f"unreachable ({type(exc).__name__})") from None

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

"""What carries one call between roles: urllib3's keep-alive pools, with nothing retried below
cqrs_common.client (its one retry rule would multiply with urllib3's) and no redirect followed.

urllib3 frames the answers (status line, Content-Length, chunked bodies, conflicting lengths)
and refuses a URL it cannot send as given; this module only bounds what it reads and says, for
each failure, whether the request may have reached the peer: cqrs_common.client decides from
that whether a try's outcome is unknown (a 504 to its caller, never a 503).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import ConnectTimeoutError, HTTPError, LocationValueError, ReadTimeoutError

from cqrs_common.limits import MAX_ANSWER_BYTES

# A field value is visible characters, spaces and tabs (RFC 9110, 5.5); anything else (a NUL, a
# CR or LF that would split the request) is refused before a byte is sent. http.client, under
# urllib3, checks CR and LF only.
_BAD_FIELD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_READ_SIZE = 64 * 1024
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


@dataclass
class Response:
    """An answer: status, headers (looked up in any case), body."""

    status_code: int
    content: bytes = b""
    headers: Mapping[str, str] = field(default_factory=urllib3.HTTPHeaderDict)
    url: str = ""

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        return json.loads(self.content)


class TransportError(Exception):
    """A try that got no usable answer. `sent` is False only when the request surely never left
    (no connection could be made, or it was refused before sending); `timed_out` when the answer
    did not come in time."""

    def __init__(self, detail: str, *, sent: bool, timed_out: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.sent = sent
        self.timed_out = timed_out


class Transport(Protocol):
    """One exchange, or TransportError. A test gives a Client one of its own."""

    def urlopen(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: Mapping[str, str],
        timeout: tuple[float, float],
    ) -> Response: ...

    def close(self) -> None: ...


class PooledTransport:
    """Keep-alive connections per scheme, host and port, a urllib3 connection pool each (kept
    here, not by a PoolManager: its URL parsing and pool keys were a fifth of a call's CPU in
    a micro-benchmark, docs/benchmarks.md). urllib3 replaces a pooled connection the
    peer has closed before sending on it; it never sends a request twice (retries off)."""

    def __init__(self, pool_size: int) -> None:
        self.pool_size = pool_size
        self._pools: dict[tuple[str, str], urllib3.HTTPConnectionPool] = {}
        self._lock = threading.Lock()

    def _pool(self, scheme: str, netloc: str) -> urllib3.HTTPConnectionPool:
        pool = self._pools.get((scheme, netloc))
        if pool is None:
            with self._lock:
                pool = self._pools.get((scheme, netloc))
                if pool is None:
                    pool = urllib3.connection_from_url(
                        f"{scheme}://{netloc}", maxsize=self.pool_size, retries=False
                    )
                    self._pools[(scheme, netloc)] = pool
        return pool

    def urlopen(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: Mapping[str, str],
        timeout: tuple[float, float],
    ) -> Response:
        check_headers(headers)
        scheme, netloc, path, query, _ = urlsplit(url)
        try:
            if scheme not in ("http", "https") or not netloc:
                raise LocationValueError(f"not an http(s) URL: {url}")
            answer = self._pool(scheme, netloc).urlopen(
                method, f"{path or '/'}?{query}" if query else path or "/", body=body,
                headers=dict(headers), retries=False, redirect=False, assert_same_host=False,
                timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]),
                preload_content=False, decode_content=False,
            )  # fmt: skip
        except ConnectTimeoutError as exc:  # NewConnectionError and NameResolutionError too
            raise TransportError(f"no connection ({type(exc).__name__})", sent=False) from None
        except LocationValueError as exc:
            raise TransportError(f"cannot be sent ({exc})", sent=False) from None
        except ReadTimeoutError:
            raise TransportError("no answer in time", sent=True, timed_out=True) from None
        except (HTTPError, OSError) as exc:  # InvalidHeader (two lengths), BadStatusLine...
            raise TransportError(f"broken answer ({_cause(exc)})", sent=True) from None
        try:
            return Response(answer.status, _body(answer), answer.headers, url)
        finally:
            answer.release_conn()

    def close(self) -> None:
        with self._lock:
            pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.close()


def check_headers(headers: Mapping[str, str]) -> None:
    """ValueError for a header that is not a token name with a clean value (never sent)."""
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name) or _BAD_FIELD_VALUE.search(value):
            raise ValueError(f"invalid header {name!r}")


def _body(answer: urllib3.BaseHTTPResponse) -> bytes:
    """The whole body, at most MAX_ANSWER_BYTES; a connection whose answer is not read to its
    end, or is framed by a coding other than chunked, is closed, never reused."""
    coding = answer.headers.get("transfer-encoding")
    try:
        if coding is not None and coding.strip().lower() != "chunked":
            raise TransportError(f"answered with Transfer-Encoding {coding!r}", sent=True)
        # http.client reads a body whose length is not a number to the close; RFC 9112 (6.3)
        # makes it an error. urllib3 has already refused lengths that differ.
        length = answer.headers.get("content-length")
        if coding is None and not _is_length(length or "0"):
            raise TransportError("answered with a Content-Length that is not a number", sent=True)
        if coding is None and length is not None:  # one read of the declared length
            if int(length.split(",")[0]) > MAX_ANSWER_BYTES:
                raise TransportError(f"answered more than {MAX_ANSWER_BYTES} bytes", sent=True)
            return answer.read()
        parts, size = [], 0
        for part in answer.stream(_READ_SIZE):  # to the end of the body, or an error
            size += len(part)
            if size > MAX_ANSWER_BYTES:
                raise TransportError(f"answered more than {MAX_ANSWER_BYTES} bytes", sent=True)
            parts.append(part)
        return b"".join(parts)
    except TransportError:
        answer.close()
        raise
    except (HTTPError, OSError) as exc:  # cut short, a bad chunk, too slow
        answer.close()
        timed_out = isinstance(exc, ReadTimeoutError)
        detail = f"broken answer ({_cause(exc)})"
        raise TransportError(detail, sent=True, timed_out=timed_out) from None


def _is_length(value: str) -> bool:
    return all(v.strip().isascii() and v.strip().isdigit() for v in value.split(","))


def _cause(exc: BaseException) -> str:
    inner = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], BaseException) else None
    return type(inner or exc).__name__

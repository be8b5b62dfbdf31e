"""The roles' HTTP/1.1 transport: keep-alive connections per host, each request written in one send
and each answer read with its Content-Length or chunked body.

Leaner than http.client, which the roles used before: it parses every answer's headers through the
email package and checks each header it sends one by one, about a tenth of a calling role's CPU
in make bench's profile. Errors are OSError (TimeoutError for a read past its time) or
http.client.HTTPException, as http.client raises them.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol
from urllib.parse import urlsplit

MAX_LINE = 65536  # a status or header line longer than this is refused
MAX_HEADERS = 100
_NO_BODY = frozenset({204, 304})


class Headers(dict[str, str]):
    """Header names are case-insensitive: kept and looked up in lower case."""

    def __init__(self, pairs: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        items = pairs.items() if isinstance(pairs, Mapping) else pairs
        super().__init__((name.lower(), value) for name, value in items)

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(name.lower(), default)


@dataclass
class Response:
    """An answer: status, headers, body."""

    status_code: int
    content: bytes = b""
    headers: Headers = field(default_factory=Headers)
    url: str = ""

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        return json.loads(self.content)


class Transport(Protocol):
    """What carries a call: one exchange, or OSError / http.client.HTTPException."""

    def urlopen(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: Mapping[str, str],
        timeout: tuple[float, float],
    ) -> Response: ...

    def close(self) -> None: ...


class Connection:
    """One HTTP/1.1 connection; `exchange` sends a request and reads its answer."""

    def __init__(self, host: str, port: int, timeout: float, tls: ssl.SSLContext | None) -> None:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=host)
        self.sock = sock
        self.file: BinaryIO = sock.makefile("rb")
        default_port = 443 if tls is not None else 80
        self.host = host if port == default_port else f"{host}:{port}"

    def exchange(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | None,
        timeout: float,
    ) -> tuple[int, Headers, bytes, bool]:  # fmt: skip
        """Status, headers, body, and whether the connection may carry another request."""
        self.sock.settimeout(timeout)
        self.sock.sendall(_request_bytes(method, path, self.host, headers, body))
        while True:
            version, status = _status_line(self.file.readline(MAX_LINE + 1))
            answer_headers = _header_lines(self.file)
            if not 100 <= status < 200:  # a 1xx is followed by the real answer
                break
        keep = _keeps_alive(version, answer_headers)
        if method == "HEAD" or status in _NO_BODY:
            return status, answer_headers, b"", keep
        if "chunked" in answer_headers.get("transfer-encoding", "").lower():
            return status, answer_headers, _chunked(self.file), keep
        length = answer_headers.get("content-length")
        if length is None:  # the body runs until the peer closes
            return status, answer_headers, self.file.read(), False
        if not length.isdigit():
            raise http.client.HTTPException(f"bad Content-Length: {length!r}")
        return status, answer_headers, _exactly(self.file, int(length)), keep

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _request_bytes(
    method: str, path: str, host: str, headers: Mapping[str, str], body: bytes | None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise ValueError(f"invalid header {name!r}")  # never split into two headers
        lines.append(f"{name}: {value}")
    if body is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body or b'')}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body if body else head


def _status_line(line: bytes) -> tuple[str, int]:
    if not line:
        raise http.client.RemoteDisconnected("the peer closed the connection without answering")
    if len(line) > MAX_LINE:
        raise http.client.LineTooLong("status line")
    version, _, rest = line.decode("latin-1").partition(" ")
    status = rest[:3]
    if not version.startswith("HTTP/1.") or not status.isdigit():
        raise http.client.BadStatusLine(line.decode("latin-1", errors="replace").strip())
    return version, int(status)


def _header_lines(file: BinaryIO) -> Headers:
    pairs: list[tuple[str, str]] = []
    while True:
        line = file.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise http.client.LineTooLong("header line")
        if line in (b"\r\n", b"\n"):
            return Headers(pairs)
        if not line:
            raise http.client.IncompleteRead(b"")
        if len(pairs) >= MAX_HEADERS:
            raise http.client.HTTPException(f"got more than {MAX_HEADERS} headers")
        name, _, value = line.decode("latin-1").partition(":")
        pairs.append((name.strip(), value.strip()))


def _keeps_alive(version: str, headers: Headers) -> bool:
    connection = headers.get("connection", "").lower()
    if version == "HTTP/1.0":
        return "keep-alive" in connection
    return "close" not in connection


def _exactly(file: BinaryIO, length: int) -> bytes:
    data = file.read(length)
    if len(data) < length:
        raise http.client.IncompleteRead(data, length - len(data))
    return data


def _chunked(file: BinaryIO) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = file.readline(MAX_LINE + 1)
        size_text = size_line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise http.client.HTTPException(f"bad chunk size: {size_text!r}") from None
        if size == 0:
            _header_lines(file)  # trailers, up to the empty line
            return b"".join(parts)
        parts.append(_exactly(file, size))
        if _exactly(file, 2) != b"\r\n":
            raise http.client.HTTPException("a chunk does not end with CRLF")


class ConnectionPool:
    """Keep-alive connections per scheme, host and port; an idle one the peer closed meanwhile
    is replaced once, transparently."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._idle: dict[tuple[str, str, int], list[Connection]] = {}
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None

    def _new(self, key: tuple[str, str, int], timeout: float) -> Connection:
        scheme, host, port = key
        if scheme == "https":
            self._tls = self._tls or ssl.create_default_context()
        return Connection(host, port, timeout, self._tls if scheme == "https" else None)

    def _take(self, key: tuple[str, str, int]) -> Connection | None:
        with self._lock:
            idle = self._idle.get(key)
            return idle.pop() if idle else None

    def _give_back(self, key: tuple[str, str, int], conn: Connection) -> None:
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
    ) -> Response:
        """One exchange; raises OSError or http.client.HTTPException when it fails."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise http.client.InvalidURL(f"not an http(s) URL: {url}")
        key = (scheme, parts.hostname or "", parts.port or (443 if scheme == "https" else 80))
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn = self._take(key)
        reused = conn is not None
        while True:
            if conn is None:
                conn = self._new(key, timeout[0])
            try:
                status, answer_headers, content, keep = conn.exchange(
                    method, path, headers, body, timeout[1]
                )
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if not reused or isinstance(exc, TimeoutError):
                    raise
                # The peer closed an idle keep-alive connection: try once on a new one.
                conn, reused = None, False
                continue
            except BaseException:  # a request refused before sending (a bad header): no leak
                conn.close()
                raise
            break
        if keep:
            self._give_back(key, conn)
        else:
            conn.close()
        return Response(status, content, answer_headers, url)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

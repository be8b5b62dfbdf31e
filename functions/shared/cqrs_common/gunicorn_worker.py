"""gunicorn's gthread worker, except that a thread only ever gets a request that has fully arrived.

gthread hands a connection to one of its 8 threads as soon as it is readable, and the thread then
reads the request with no time limit: 8 clients that open a connection and send half a request
(or nothing) hold every thread, and the role stops answering, its probes included. Here the
worker's event loop reads each request, line, headers and body, without blocking; a thread gets
it only once it is all there, so a slow or silent client costs a socket and a few bytes, never a
thread. The loop also enforces, before any app code runs:

- a read deadline: a request must arrive whole within REQUEST_READ_TIMEOUT seconds (10) of its
  first byte, else 408; a connection that sends nothing is closed after `keepalive` seconds;
- the body limit: past 64 KiB (by Content-Length, or counted across chunks) the answer is 413
  with `Connection: close`, and the body is never truncated into something that parses;
- bounded connections: past `worker_connections`, the longest-waiting connection that has sent
  nothing is closed to make room, so new connections (and probes) are always accepted;
- problem+json for gunicorn's own refusals (400, 414, 431, ...), like every other error here.

A connection the worker closes after an error answer is closed gently (half-closed, the rest of
the request read and dropped for a moment) so the client reads the answer instead of a reset.
The time a request finished arriving goes to the app as environ["cqrs.arrived"], so the time it
then waits for a thread counts against its budget (cqrs_common.deadline).

Written against gunicorn 27's gthread (its TConn, poller, method queue and finish_request).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from gunicorn import http as gunicorn_http
from gunicorn.http import errors as http_errors
from gunicorn.workers.gthread import TConn, ThreadWorker

from cqrs_common.limits import MAX_BODY_BYTES, MAX_HEAD_BYTES, PROBLEM_JSON

ARRIVED_KEY = "cqrs.arrived"  # the same key as cqrs_common.web.ARRIVED_KEY
# How long a stopping worker keeps connections that have not sent a whole request.
STOP_LINGER = 2.0
# After an error answer: how long, and how much, to read and drop before closing.
CLOSE_LINGER = 2.0
CLOSE_DRAIN_BYTES = 1024 * 1024

INCOMPLETE, COMPLETE = "incomplete", "complete"
BAD_FRAMING, TOO_LARGE, URI_TOO_LONG, HEAD_TOO_LARGE = "400", "413", "414", "431"
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


def frame(data: bytes | bytearray, max_body: int = MAX_BODY_BYTES,
          max_head: int = MAX_HEAD_BYTES) -> tuple[str, bool]:  # fmt: skip
    """Whether `data` holds a whole HTTP/1.1 request: (verdict, waits for 100-continue).

    COMPLETE also stands for "malformed in a way gunicorn's parser will refuse without reading
    more": the parser, not this function, decides what is valid HTTP.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0 and len(data) <= max_head:
        return INCOMPLETE, False
    if end < 0 or end > max_head:
        line_end = data.find(b"\r\n")
        return (URI_TOO_LONG if line_end < 0 or line_end > max_head else HEAD_TOO_LARGE), False
    length: int | None = None
    chunked = expect = False
    for line in bytes(data[:end]).split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            return COMPLETE, False
        name, value = name.strip().lower(), value.strip()
        if name == b"content-length":
            if not value.isdigit():
                return COMPLETE, False
            if len(value) > 18 or int(value) > max_body:
                return TOO_LARGE, False
            if length is not None and int(value) != length:
                return COMPLETE, False
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = chunked or b"chunked" in value.lower()
            if not chunked:
                return COMPLETE, False  # a coding gunicorn does not take: it answers 501
        elif name == b"expect":
            expect = value.lower() == b"100-continue"
    body = data[end + 4 :]
    if chunked:
        if length is not None:
            return COMPLETE, False  # both framings at once: gunicorn refuses it
        verdict = _chunks(body, max_body, max_head)
        return verdict, expect and verdict == INCOMPLETE and not body
    if len(body) >= (length or 0):
        return COMPLETE, False
    return INCOMPLETE, expect and not body


def _chunks(body: bytes | bytearray, max_body: int, max_head: int) -> str:
    """Whether a chunked body (with its trailers) is all there, counting its size."""
    pos = total = 0
    while True:
        eol = body.find(b"\r\n", pos)
        if eol < 0:  # no size line is that long
            return BAD_FRAMING if len(body) - pos > 1024 else INCOMPLETE
        size = bytes(body[pos:eol]).split(b";", 1)[0].strip()
        if not _CHUNK_SIZE.fullmatch(size):
            # Answered here: the app would meet it only while reading the body, after which
            # gunicorn could not tell the client anything sensible on the same connection.
            return BAD_FRAMING
        total += int(size, 16)
        if total > max_body:
            return TOO_LARGE
        if int(size, 16) == 0:
            if body[eol + 2 : eol + 4] == b"\r\n" or body.find(b"\r\n\r\n", eol) >= 0:
                return COMPLETE
            return HEAD_TOO_LARGE if len(body) - eol > max_head else INCOMPLETE
        pos = eol + 2 + int(size, 16) + 2
        if len(body) < pos:
            return INCOMPLETE
        if body[pos - 2 : pos] != b"\r\n":
            return BAD_FRAMING


def problem_bytes(status: int, reason: str, detail: str) -> bytes:
    """A whole HTTP/1.1 answer: an RFC 9457 problem, and the connection closes after it."""
    body = json.dumps({"type": "about:blank", "title": reason, "status": status, "detail": detail})
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {PROBLEM_JSON}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return (head + body).encode("latin-1")


def error_status(exc: BaseException) -> tuple[int, str]:
    """The status gunicorn would answer for one of its own errors (base.Worker.handle_error)."""
    if isinstance(exc, (http_errors.InvalidResponseHeader, http_errors.InvalidResponseHeaderName)):
        return 500, "Internal Server Error"  # the app's fault, not the client's
    table: Iterable[tuple[type[BaseException], int, str]] = (
        (http_errors.LimitRequestLine, 414, "URI Too Long"),
        (http_errors.LimitRequestHeaders, 431, "Request Header Fields Too Large"),
        (http_errors.UnsupportedTransferCoding, 501, "Not Implemented"),
        (http_errors.ExpectationFailed, 417, "Expectation Failed"),
        (http_errors.ForbiddenProxyRequest, 403, "Forbidden"),
        (http_errors.ConfigurationProblem, 500, "Internal Server Error"),
        (http_errors.ParseException, 400, "Bad Request"),
    )
    for kind, status, reason in table:
        if isinstance(exc, kind):
            return status, reason
    return 500, "Internal Server Error"


class BufferedConn(TConn):
    """A connection whose request the event loop reads; `init` runs in the thread."""

    def __init__(self, cfg: Any, sock: socket.socket, client: Any, server: Any) -> None:
        super().__init__(cfg, sock, client, server)
        self.pending = bytearray()
        self.first_byte: float | None = None  # when the request being read began to arrive
        self.idle_since = time.monotonic()
        self.continued = False  # 100 Continue sent for the request being read
        self.arrived = 0.0
        self.read_timeout = 10.0

    def init(self) -> None:
        # The request is already in the parser's buffer: a read from the socket here would mean
        # this module and gunicorn disagree on its framing, so it may not wait long.
        self.sock.settimeout(self.read_timeout)


class BufferedThreadWorker(ThreadWorker):
    def init_process(self) -> None:
        if self.cfg.is_ssl:
            raise RuntimeError("BufferedThreadWorker serves plain HTTP/1.1 (TLS ends at the mesh)")
        self.read_timeout = float(os.environ.get("REQUEST_READ_TIMEOUT", "10"))
        self.waiting: dict[BufferedConn, None] = {}  # insertion order: longest waiting first
        self.closing: dict[socket.socket, float] = {}  # answered and half-closed: until when
        # Room for the connections the threads hold; the rest may wait in the loop.
        self.max_waiting = max(16, self.worker_connections - self.cfg.threads)
        self.stopping_since: float | None = None
        self.arrival = threading.local()
        super().init_process()  # runs the loop

    def load_wsgi(self) -> None:
        super().load_wsgi()
        app, arrival = self.wsgi, self.arrival

        def stamped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            environ[ARRIVED_KEY] = getattr(arrival, "at", None) or time.monotonic()
            return app(environ, start_response)

        stamped.__wrapped__ = app  # type: ignore[attr-defined]  # the app, for gunicorn_conf
        self.wsgi = stamped

    # -- the event loop ----------------------------------------------------------------------

    def accept(self, listener: socket.socket) -> None:
        try:
            sock, client = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = BufferedConn(self.cfg, sock, client, listener.getsockname())
        conn.read_timeout = self.read_timeout
        self._wait(conn, b"")
        if len(self.waiting) > self.max_waiting:
            self._evict()

    def _wait(self, conn: BufferedConn, leftover: bytes) -> None:
        """Read the connection's next request in the loop, starting with what is buffered."""
        now = time.monotonic()
        conn.sock.setblocking(False)
        conn.pending = bytearray(leftover)
        conn.first_byte = now if leftover else None
        conn.idle_since, conn.continued = now, False
        if leftover and self._advance(conn):
            return
        self.waiting[conn] = None
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._readable, conn))

    def _readable(self, conn: BufferedConn, _sock: socket.socket) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away
            self._forget(conn)
            self._close(conn)
            return
        if conn.first_byte is None:
            conn.first_byte = time.monotonic()
        conn.pending += data
        self._advance(conn)

    def _advance(self, conn: BufferedConn) -> bool:
        """Act on what has arrived; True once the connection has left the loop's hands."""
        verdict, expects_continue = frame(conn.pending)
        if verdict == INCOMPLETE:
            if expects_continue and not conn.continued:
                conn.continued = True
                _send_quietly(conn.sock, b"HTTP/1.1 100 Continue\r\n\r\n")
            return False
        self._forget(conn)
        if verdict == TOO_LARGE:
            detail = f"the body is larger than {MAX_BODY_BYTES // 1024} KiB"
            self._answer_and_close(conn, 413, "Request Entity Too Large", detail)
        elif verdict == BAD_FRAMING:
            self._answer_and_close(conn, 400, "Bad Request", "malformed chunked body")
        elif verdict == URI_TOO_LONG:
            detail = f"the request line is longer than {MAX_HEAD_BYTES // 1024} KiB"
            self._answer_and_close(conn, 414, "URI Too Long", detail)
        elif verdict == HEAD_TOO_LARGE:
            detail = f"the request line and headers are larger than {MAX_HEAD_BYTES // 1024} KiB"
            self._answer_and_close(conn, 431, "Request Header Fields Too Large", detail)
        else:
            self._dispatch(conn)
        return True

    def _dispatch(self, conn: BufferedConn) -> None:
        if conn.parser is None:
            conn.parser = gunicorn_http.get_parser(self.cfg, conn.sock, conn.client)
            conn.initialized = True
        conn.parser.unreader.unread(bytes(conn.pending))
        conn.pending = bytearray()
        conn.data_ready = True
        conn.arrived = time.monotonic()
        self.enqueue_req(conn)

    def _forget(self, conn: BufferedConn) -> None:
        """Take a connection out of the loop's waiting set (it is dispatched or closed)."""
        if conn in self.waiting:
            del self.waiting[conn]
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(conn.sock)

    def _evict(self) -> None:
        """Too many waiting connections: close the longest-waiting one that sent nothing (else
        the longest-waiting one), so a flood of idle sockets cannot lock anyone out."""
        victim = next((c for c in self.waiting if c.first_byte is None), None)
        victim = victim or next(iter(self.waiting))
        self._forget(victim)
        if victim.first_byte is None:
            self._close(victim)
        else:
            self._answer_and_close(victim, 503, "Service Unavailable", "too many connections")

    def _answer_and_close(self, conn: BufferedConn, status: int, reason: str, detail: str) -> None:
        _send_quietly(conn.sock, problem_bytes(status, reason, detail))
        self._close(conn)

    def _close(self, conn: BufferedConn) -> None:
        """Half-close, then read and drop what the client still sends for a moment, so that it
        reads our answer rather than a reset (RFC 9112 section 9.6); the loop never blocks."""
        sock = conn.sock
        try:
            sock.setblocking(False)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._closed(sock)
            return
        self.closing[sock] = time.monotonic() + CLOSE_LINGER
        self.poller.register(sock, selectors.EVENT_READ, partial(self._drain, [0]))

    def _drain(self, drained: list[int], sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        drained[0] += len(data)
        if not data or drained[0] > CLOSE_DRAIN_BYTES:
            self.closing.pop(sock, None)
            self.poller.unregister(sock)
            self._closed(sock)

    def _closed(self, sock: socket.socket) -> None:
        self.nr_conns -= 1
        with contextlib.suppress(OSError):
            sock.close()

    def murder_keepalived(self, force: bool = False) -> None:
        """Once a second (and at the end): time out waiting and closing connections."""
        now = time.monotonic()
        if not self.alive and self.stopping_since is None:
            self.stopping_since = now
        stop = self.stopping_since is not None and now - self.stopping_since > STOP_LINGER
        for conn in list(self.waiting):
            if conn.first_byte is None:
                if force or stop or now - conn.idle_since > self.cfg.keepalive:
                    self._forget(conn)
                    self._close(conn)
            elif force or now - conn.first_byte > self.read_timeout:
                self._forget(conn)
                detail = f"the request did not arrive whole within {self.read_timeout:g} s"
                self._answer_and_close(conn, 408, "Request Timeout", detail)
        for sock, until in list(self.closing.items()):
            if force or now > until:
                del self.closing[sock]
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self.poller.unregister(sock)
                self._closed(sock)
        super().murder_keepalived(force)

    # -- the threads ----------------------------------------------------------------------------

    def handle(self, conn: BufferedConn) -> Any:
        self.arrival.at = conn.arrived
        return super().handle(conn)

    def handle_request(self, req: Any, conn: BufferedConn) -> bool:
        if conn.continued:
            req._expected_100_continue = False  # sent already, while the body was awaited
        return super().handle_request(req, conn)

    def finish_request(self, conn: BufferedConn, fs: Any) -> None:  # type: ignore[override]
        """Back in the loop: read the next request of a kept-alive connection, or close."""
        try:
            keep = bool(fs.result()) if not fs.cancelled() else False
        except Exception:
            keep = False
        if keep and self.alive:
            self._wait(conn, conn.parser.unreader.take_buffered())
        else:
            self._close(conn)

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException) -> None:
        """gunicorn's own refusals (a malformed request, limits) as problem+json."""
        status, reason = error_status(exc)
        if status >= 500:
            self.log.exception("Error handling request")
            detail = "unexpected error; it has been logged"
        else:
            self.log.warning("Invalid request from %s: %s", (addr or ("",))[0], exc)
            detail = str(exc)
        try:
            client.settimeout(self.read_timeout)
            client.sendall(problem_bytes(status, reason, detail))
        except OSError:
            self.log.debug("Failed to send error message.")


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    """A short answer on a non-blocking socket: it fits in the send buffer, or the client is
    gone (and a half-written answer is all it would have read anyway)."""
    with contextlib.suppress(OSError):
        sock.send(data)

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
- the framing by h11, a maintained HTTP/1.1 parser (Framer): a shape two parsers could read
  differently (two Transfer-Encodings, Transfer-Encoding with Content-Length, an obsolete line
  folding, two Content-Lengths, a coding other than chunked) or a malformed chunk or trailer is
  a 400 and a closed connection, and the thread gets the request framed by Content-Length
  alone, so gunicorn's parser never reads a body there;
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
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import h11
from gunicorn import http as gunicorn_http
from gunicorn.http import errors as http_errors
from gunicorn.workers.gthread import TConn, ThreadWorker

from cqrs_common import problems
from cqrs_common.limits import ARRIVED_KEY, MAX_BODY_BYTES, MAX_HEAD_BYTES
from cqrs_common.problems import PROBLEM_JSON

# How long a stopping worker keeps connections that have not sent a whole request.
STOP_LINGER = 2.0
# After an error answer: how long, and how much, to read and drop before closing.
CLOSE_LINGER = 2.0
CLOSE_DRAIN_BYTES = 1024 * 1024

INCOMPLETE, COMPLETE = "incomplete", "complete"
BAD_FRAMING, TOO_LARGE, URI_TOO_LONG, HEAD_TOO_LARGE = "400", "413", "414", "431"
# Framing headers of the request as it arrived: the thread's copy is framed by Content-Length
# alone, its body already whole (no 100 Continue is owed either).
_REFRAMED = frozenset({b"content-length", b"transfer-encoding", b"expect"})


class Framer:
    """One request of a connection, read as it arrives by h11 (a maintained HTTP/1.1 parser):
    whether it is whole, too large or malformed, and then the same request framed by a
    Content-Length alone for gunicorn's parser, which so never reads a body in a thread.

    Refused with 400 besides what h11 refuses (two Content-Lengths that differ, a coding other
    than chunked, two Transfer-Encoding lines, a malformed chunk or trailer): the shapes that
    two parsers read differently, Transfer-Encoding with Content-Length, and an obsolete line
    folding (h11 unfolds it)."""

    def __init__(self, max_body: int = MAX_BODY_BYTES, max_head: int = MAX_HEAD_BYTES) -> None:
        self.max_body, self.max_head = max_body, max_head
        self.parser = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head)
        self.request: h11.Request | None = None
        self.head = bytearray()  # what arrived before the request line and headers were read
        self.body = bytearray()
        self.detail = ""

    def feed(self, data: bytes | bytearray) -> str:
        """Take what arrived; the verdict on the request so far."""
        if not data:  # to h11, the end of the stream
            return INCOMPLETE
        if self.request is None:
            self.head += data
            # h11 bounds only a head still incomplete: one that arrived whole is bounded here.
            end = self.head.find(b"\r\n\r\n")
            if end > self.max_head or (end < 0 and len(self.head) > self.max_head):
                return self._head_too_large()
        self.parser.receive_data(bytes(data))
        while True:
            try:
                event = self.parser.next_event()
            except h11.RemoteProtocolError as exc:
                self.detail = str(exc)
                if exc.error_status_hint == 431:  # the line and headers past max_head
                    return self._head_too_large()
                return BAD_FRAMING
            if event is h11.NEED_DATA:
                return INCOMPLETE
            if isinstance(event, h11.Request):
                verdict = self._check(event)
                if verdict is not None:
                    return verdict
            elif isinstance(event, h11.Data):
                self.body += event.data
                if len(self.body) > self.max_body:
                    return TOO_LARGE
            elif isinstance(event, h11.EndOfMessage):
                return COMPLETE
            else:  # nothing else comes before the end of a request
                return INCOMPLETE

    def _head_too_large(self) -> str:
        line_end = self.head.find(b"\n")
        return URI_TOO_LONG if line_end < 0 or line_end > self.max_head else HEAD_TOO_LARGE

    def _check(self, request: h11.Request) -> str | None:
        self.request = request
        end = self.head.find(b"\r\n\r\n")
        head = self.head[: end if end >= 0 else len(self.head)]
        if b"\n " in head or b"\n\t" in head:
            self.detail = "obsolete line folding"
            return BAD_FRAMING
        names = {name for name, _ in request.headers}
        if {b"transfer-encoding", b"content-length"} <= names:
            self.detail = "both Transfer-Encoding and Content-Length"
            return BAD_FRAMING
        length = next((v for n, v in request.headers if n == b"content-length"), None)
        return TOO_LARGE if length is not None and int(length) > self.max_body else None

    @property
    def waits_for_continue(self) -> bool:
        """The client waits for a 100 Continue before it sends the body."""
        return self.parser.they_are_waiting_for_100_continue

    def reframed(self) -> tuple[bytes, bytes]:
        """The whole request framed by Content-Length, and what arrived after it (pipelined)."""
        assert self.request is not None
        request = self.request
        lines = [b"%s %s HTTP/%s" % (request.method, request.target, request.http_version)]
        lines += [
            b"%s: %s" % (name, value)
            for name, value in request.headers.raw_items()
            if name.lower() not in _REFRAMED
        ]
        lines.append(b"Content-Length: %d" % len(self.body))
        leftover, _ = self.parser.trailing_data
        return b"\r\n".join(lines) + b"\r\n\r\n" + bytes(self.body), leftover


def frame(data: bytes | bytearray, max_body: int = MAX_BODY_BYTES,
          max_head: int = MAX_HEAD_BYTES) -> tuple[str, bool]:  # fmt: skip
    """The verdict on `data` as a request's first bytes, and whether its client waits for a 100
    Continue (Framer, in one go)."""
    framer = Framer(max_body, max_head)
    verdict = framer.feed(data)
    return verdict, verdict == INCOMPLETE and framer.waits_for_continue


def problem_bytes(status: int, reason: str, detail: str) -> bytes:
    """A whole HTTP/1.1 answer: an RFC 9457 problem, and the connection closes after it."""
    body = problems.document(status, reason, detail)
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
        self.framer = Framer()
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
        conn.framer = Framer()
        conn.first_byte = now if leftover else None
        conn.idle_since, conn.continued = now, False
        if leftover and self._advance(conn, leftover):
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
        self._advance(conn, data)

    def _advance(self, conn: BufferedConn, data: bytes) -> bool:
        """Act on what has arrived; True once the connection has left the loop's hands."""
        verdict = conn.framer.feed(data)
        if verdict == INCOMPLETE:
            if conn.framer.waits_for_continue and not conn.continued:
                conn.continued = True
                _send_quietly(conn.sock, b"HTTP/1.1 100 Continue\r\n\r\n")
            return False
        self._forget(conn)
        if verdict == TOO_LARGE:
            self._answer_and_close(conn, 413, "Request Entity Too Large", problems.BODY_TOO_LARGE)
        elif verdict == BAD_FRAMING:
            detail = f"malformed request: {conn.framer.detail}"
            self._answer_and_close(conn, 400, "Bad Request", detail)
        elif verdict == URI_TOO_LONG:
            self._answer_and_close(conn, 414, "URI Too Long", problems.LINE_TOO_LONG)
        elif verdict == HEAD_TOO_LARGE:
            reason = "Request Header Fields Too Large"
            self._answer_and_close(conn, 431, reason, problems.HEAD_TOO_LARGE)
        else:
            self._dispatch(conn)
        return True

    def _dispatch(self, conn: BufferedConn) -> None:
        if conn.parser is None:
            conn.parser = gunicorn_http.get_parser(self.cfg, conn.sock, conn.client)
            conn.initialized = True
        request, leftover = conn.framer.reframed()
        conn.parser.unreader.unread(request + leftover)
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

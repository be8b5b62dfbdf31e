"""A gunicorn worker that speaks HTTP/1.1 through h11 and gives a thread only a whole request.

gunicorn stays the server: its master binds, forks, supervises, reloads and stops the workers;
this is a worker class on gunicorn's documented extension point, `gunicorn.workers.base.Worker`
(it overrides `run` and nothing of any other worker). The protocol, both ways, is h11's, a
maintained HTTP/1.1 implementation: it reads each request in the worker's event loop without
blocking, and it frames each answer (Content-Length or chunked, keep-alive or close, no body
for HEAD). A thread of the pool (`threads`, 8) gets a request only once it has all arrived, so
a slow or silent client costs a socket and a few bytes, never a thread. Before any app code
runs, the loop enforces:

- a read deadline: a request must arrive whole within REQUEST_READ_TIMEOUT seconds (10) of its
  first byte, else 408; a connection that sends nothing is closed after `keepalive` seconds;
- the body limit: past 64 KiB (by Content-Length, or counted across chunks) the answer is 413,
  and the body is never truncated into something that parses;
- the size limits of the request line and headers: gunicorn's own settings
  (`limit_request_line`, `limit_request_fields`, `limit_request_field_size`), 414 or 431;
- bounded connections: past `worker_connections`, the longest-waiting connection that has sent
  nothing is closed to make room, so new connections (and probes) are always accepted;
- no shape that two parsers could read differently: h11 refuses two different Content-Lengths,
  two Transfer-Encoding lines, a coding other than chunked and malformed chunks or trailers;
  Framer also refuses Transfer-Encoding with Content-Length and an obsolete line folding.

Each refusal is a problem+json answer and a closed connection, closed gently (half-closed, the
rest of the request read and dropped for a moment) so the client reads the answer instead of a
reset. The app gets a PEP 3333 environ whose body is whole (`CONTENT_LENGTH` is its size) and
environ["cqrs.arrived"], when the request finished arriving, so the time it then waited for a
thread counts against its budget (cqrs_common.deadline). A header whose name has an underscore is
dropped, as gunicorn does: in the environ it would pass for the same name with a hyphen.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import queue
import selectors
import socket
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from functools import partial
from typing import Any
from urllib.parse import unquote_to_bytes

import h11
from gunicorn.workers.base import Worker

from cqrs_common import problems
from cqrs_common.limits import ARRIVED_KEY, MAX_BODY_BYTES, MAX_HEAD_BYTES
from cqrs_common.problems import PROBLEM_JSON

# How long a stopping worker keeps connections that have not sent a whole request.
STOP_LINGER = 2.0
# After an error answer: how long, and how much, to read and drop before closing.
CLOSE_LINGER = 2.0
CLOSE_DRAIN_BYTES = 1024 * 1024
# A thread writing an answer to a client that does not read gives up after this long.
WRITE_TIMEOUT = 30.0
# How often the loop tells the master it is alive and times connections out (seconds).
SWEEP_INTERVAL = 1.0

INCOMPLETE, COMPLETE = "incomplete", "complete"
BAD_FRAMING, TOO_LARGE, URI_TOO_LONG, HEAD_TOO_LARGE = "400", "413", "414", "431"
# gunicorn's defaults for its size settings, for a Framer made outside a worker.
LINE_LIMIT, FIELDS_LIMIT, FIELD_SIZE_LIMIT = 4094, 100, 8190
# Headers the environ does not carry as HTTP_*: the body is whole, framed by its length.
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"expect"})


class Framer:
    """One request of a connection, read as it arrives by h11: whether it is whole, too large
    or malformed; then its answer, framed by the same h11 connection.

    Refused with 400 besides what h11 refuses (two Content-Lengths that differ, a coding other
    than chunked, two Transfer-Encoding lines, a malformed chunk or trailer): the shapes that
    two parsers read differently, Transfer-Encoding with Content-Length, and an obsolete line
    folding (h11 unfolds it)."""

    def __init__(
        self,
        max_body: int = MAX_BODY_BYTES,
        max_head: int = MAX_HEAD_BYTES,
        limits: tuple[int, int, int] = (LINE_LIMIT, FIELDS_LIMIT, FIELD_SIZE_LIMIT),
    ) -> None:
        self.max_body, self.max_head = max_body, max_head
        self.line_limit, self.fields_limit, self.field_size_limit = limits
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
        """Refusals h11 leaves to the server: gunicorn's size settings (0: no limit), and the
        shapes two parsers read differently."""
        self.request = request
        line = len(request.method) + len(request.target) + len(b"  HTTP/1.1")
        if self.line_limit and line > self.line_limit:
            self.detail = f"the request line is longer than {self.line_limit} bytes"
            return URI_TOO_LONG
        if self.fields_limit and len(request.headers) > self.fields_limit:
            self.detail = f"more than {self.fields_limit} header fields"
            return HEAD_TOO_LARGE
        fields = request.headers.raw_items()
        if self.field_size_limit and any(
            len(name) + len(value) + 2 > self.field_size_limit for name, value in fields
        ):
            self.detail = f"a header field is longer than {self.field_size_limit} bytes"
            return HEAD_TOO_LARGE
        # h11 unfolds an obsolete line folding (RFC 9112 lets a server do either); refused
        # here, where what arrived is still at hand: a line of the head that starts with space.
        end = self.head.find(b"\r\n\r\n")
        head = self.head[: end if end >= 0 else len(self.head)]
        if b"\n " in head or b"\n\t" in head:
            self.detail = "obsolete line folding"
            return BAD_FRAMING
        names = [name for name, _ in request.headers]
        if b"transfer-encoding" in names and b"content-length" in names:
            self.detail = "both Transfer-Encoding and Content-Length"
            return BAD_FRAMING
        length = next((v for n, v in request.headers if n == b"content-length"), None)
        return TOO_LARGE if length is not None and int(length) > self.max_body else None

    @property
    def waits_for_continue(self) -> bool:
        """The client waits for a 100 Continue before it sends the body."""
        return self.parser.they_are_waiting_for_100_continue

    @property
    def leftover(self) -> bytes:
        """What arrived after this request (the next one, pipelined)."""
        return self.parser.trailing_data[0]


def frame(data: bytes | bytearray, max_body: int = MAX_BODY_BYTES,
          max_head: int = MAX_HEAD_BYTES) -> tuple[str, bool]:  # fmt: skip
    """The verdict on `data` as a request's first bytes, and whether its client waits for a 100
    Continue (Framer, in one go)."""
    framer = Framer(max_body, max_head)
    verdict = framer.feed(data)
    return verdict, verdict == INCOMPLETE and framer.waits_for_continue


def environ_for(
    request: h11.Request,
    body: bytes,
    peer: Any,
    server: Any,
    base: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The PEP 3333 environ of a whole request, as h11 read it."""
    target = request.target.decode("latin-1")
    path, _, query = target.partition("?")
    if not path.startswith("/"):  # absolute-form (a proxy's request) or "*"
        path = "/" + path.split("://", 1)[-1].partition("/")[2] if "://" in path else path
    host, port = _address(server)
    remote_host, remote_port = _address(peer)
    environ: dict[str, Any] = {
        **(base or {}),
        "REQUEST_METHOD": request.method.decode("latin-1"),
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query,
        "RAW_URI": target,
        "REQUEST_URI": target,
        "SERVER_PROTOCOL": "HTTP/" + request.http_version.decode("latin-1"),
        "SERVER_NAME": host,
        "SERVER_PORT": port,
        "REMOTE_ADDR": remote_host,
        "REMOTE_PORT": remote_port,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.input_terminated": True,
    }
    for raw_name, raw_value in request.headers:
        if raw_name in _FRAMING or b"_" in raw_name:
            continue
        value = raw_value.decode("latin-1")
        if raw_name == b"content-type":
            environ["CONTENT_TYPE"] = value
            continue
        key = "HTTP_" + raw_name.decode("latin-1").upper().replace("-", "_")
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


def _address(address: Any) -> tuple[str, str]:
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), str(address[1])
    return str(address or ""), ""


def problem_answer(parser: h11.Connection, status: int, reason: str, detail: str) -> bytes:
    """An RFC 9457 problem as the whole answer, framed by the connection's h11 state (which
    can still frame one after refusing the request); the connection closes after it. Empty if
    h11 can frame no answer now (one has begun)."""
    body = problems.document(status, reason, detail).encode()
    head = h11.Response(
        status_code=status,
        reason=reason.encode("latin-1"),
        headers=[
            ("Content-Type", PROBLEM_JSON),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
            ("Date", _http_date()),
        ],
    )
    try:
        events = (head, h11.Data(data=body), h11.EndOfMessage())
        return b"".join(parser.send(event) or b"" for event in events)
    except h11.LocalProtocolError:
        return b""


class Conn:
    """A client connection: its socket, the request being read, and when things happened."""

    __slots__ = ("arrived", "continued", "first_byte", "framer", "idle_since", "peer", "sock")

    def __init__(self, sock: socket.socket, peer: Any) -> None:
        self.sock, self.peer = sock, peer
        self.framer = Framer()
        self.first_byte: float | None = None  # when the request being read began to arrive
        self.idle_since = time.monotonic()
        self.continued = False  # 100 Continue sent for the request being read
        self.arrived = 0.0


class H11Worker(Worker):
    """gunicorn's worker interface, h11's HTTP/1.1, a pool of `threads` for the app."""

    def init_process(self) -> None:
        if self.cfg.is_ssl:
            raise RuntimeError("H11Worker serves plain HTTP/1.1 (TLS ends at the mesh)")
        self.read_timeout = float(os.environ.get("REQUEST_READ_TIMEOUT", "10"))
        self.limits = (
            self.cfg.limit_request_line,
            self.cfg.limit_request_fields,
            self.cfg.limit_request_field_size,
        )
        self.waiting: dict[Conn, None] = {}  # insertion order: longest waiting first
        self.closing: dict[socket.socket, float] = {}  # answered and half-closed: until when
        self.in_flight: set[Conn] = set()
        self.max_waiting = max(16, self.cfg.worker_connections - self.cfg.threads)
        self.finished: queue.SimpleQueue[tuple[Conn, bool]] = queue.SimpleQueue()
        self.base_environ = {
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": self.cfg.workers > 1,
            "wsgi.run_once": False,
            "SERVER_SOFTWARE": "gunicorn",
        }
        super().init_process()  # loads the app, then runs the loop

    # -- the event loop ----------------------------------------------------------------------

    def run(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.pool = ThreadPoolExecutor(self.cfg.threads, thread_name_prefix="request")
        self.wake_r, self.wake_w = socket.socketpair()  # the threads wake the loop
        for sock in (self.wake_r, self.wake_w):
            sock.setblocking(False)
        self.selector.register(self.wake_r, selectors.EVENT_READ, self._drain_wake)
        self.selector.register(self.PIPE[0], selectors.EVENT_READ, self._drain_pipe)  # signals
        for listener in self.sockets:
            listener.setblocking(False)
            self.selector.register(listener, selectors.EVENT_READ, self._accept)
        stopping_since: float | None = None
        swept = 0.0
        while True:
            for key, _ in self.selector.select(SWEEP_INTERVAL):
                key.data(key.fileobj)
            self._take_back_finished()
            now = time.monotonic()
            if not self.alive and stopping_since is None:
                stopping_since = now
                for listener in self.sockets:  # no new connections; the master keeps them
                    with contextlib.suppress(KeyError, ValueError):
                        self.selector.unregister(listener)
            if now - swept >= SWEEP_INTERVAL or stopping_since is not None:
                swept = now
                self.notify()  # to the master: alive
                if self.alive and self.ppid != os.getppid():
                    self.log.info("Parent changed, shutting down: %s", self)
                    self.alive = False
                self._time_out(now, stopping_since)
            if stopping_since is not None and self._stopped(now - stopping_since):
                break
        self.pool.shutdown(wait=False, cancel_futures=True)
        self._time_out(time.monotonic(), None, force=True)

    def _stopped(self, stopping_for: float) -> bool:
        """Stopping: done once no request is being answered (gunicorn's master kills the worker
        after graceful_timeout anyway) and the partial ones have had STOP_LINGER."""
        idle = all(conn.first_byte is None for conn in self.waiting)
        return not self.in_flight and (idle or stopping_for > STOP_LINGER)

    def _drain_wake(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.recv(4096)

    def _drain_pipe(self, fd: int) -> None:
        with contextlib.suppress(OSError):
            os.read(fd, 4096)

    def _accept(self, listener: Any) -> None:
        try:
            sock, peer = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        if sock.family in (socket.AF_INET, socket.AF_INET6):  # answers go out as written
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._wait(Conn(sock, peer), b"")
        if len(self.waiting) > self.max_waiting:
            self._evict()

    def _wait(self, conn: Conn, leftover: bytes) -> None:
        """Read the connection's next request in the loop, starting with what is buffered."""
        now = time.monotonic()
        conn.sock.setblocking(False)
        conn.framer = Framer(limits=self.limits)
        conn.first_byte = now if leftover else None
        conn.idle_since, conn.continued = now, False
        if leftover and self._advance(conn, leftover):
            return
        self.waiting[conn] = None
        self.selector.register(conn.sock, selectors.EVENT_READ, partial(self._readable, conn))

    def _readable(self, conn: Conn, _sock: socket.socket) -> None:
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

    def _advance(self, conn: Conn, data: bytes) -> bool:
        """Act on what has arrived; True once the connection has left the loop's hands."""
        verdict = conn.framer.feed(data)
        if verdict == INCOMPLETE:
            if conn.framer.waits_for_continue and not conn.continued:
                conn.continued = True
                go_on = h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
                interim = conn.framer.parser.send(go_on)
                _send_quietly(conn.sock, interim or b"")
            return False
        self._forget(conn)
        detail = conn.framer.detail
        if verdict == TOO_LARGE:
            self._refuse(conn, 413, "Request Entity Too Large", problems.BODY_TOO_LARGE)
        elif verdict == BAD_FRAMING:
            self._refuse(conn, 400, "Bad Request", f"malformed request: {detail}")
        elif verdict == URI_TOO_LONG:
            self._refuse(conn, 414, "URI Too Long", detail or problems.LINE_TOO_LONG)
        elif verdict == HEAD_TOO_LARGE:
            reason = "Request Header Fields Too Large"
            self._refuse(conn, 431, reason, detail or problems.HEAD_TOO_LARGE)
        else:
            conn.arrived = time.monotonic()
            self.in_flight.add(conn)
            self.pool.submit(self._serve, conn)
        return True

    def _take_back_finished(self) -> None:
        """Answered connections, back from the threads: the next request, or close."""
        while True:
            try:
                conn, keep = self.finished.get_nowait()
            except queue.Empty:
                return
            self.in_flight.discard(conn)
            if keep and self.alive:
                self._wait(conn, conn.framer.leftover)
            else:
                self._close(conn)

    def _forget(self, conn: Conn) -> None:
        """Take a connection out of the loop's waiting set (it is dispatched or closed)."""
        if conn in self.waiting:
            del self.waiting[conn]
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.selector.unregister(conn.sock)

    def _evict(self) -> None:
        """Too many waiting connections: close the longest-waiting one that sent nothing (else
        the longest-waiting one), so a flood of idle sockets cannot lock anyone out."""
        victim = next((c for c in self.waiting if c.first_byte is None), None)
        victim = victim or next(iter(self.waiting))
        self._forget(victim)
        if victim.first_byte is None:
            self._close(victim)
        else:
            self._refuse(victim, 503, "Service Unavailable", "too many connections")

    def _refuse(self, conn: Conn, status: int, reason: str, detail: str) -> None:
        self.log.debug("refused %s from %s: %s", status, _address(conn.peer)[0], detail)
        _send_quietly(conn.sock, problem_answer(conn.framer.parser, status, reason, detail))
        self._close(conn)

    def _close(self, conn: Conn) -> None:
        """Half-close, then read and drop what the client still sends for a moment, so that it
        reads our answer rather than a reset (RFC 9112 section 9.6); the loop never blocks."""
        sock = conn.sock
        try:
            sock.setblocking(False)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            _close_quietly(sock)
            return
        self.closing[sock] = time.monotonic() + CLOSE_LINGER
        self.selector.register(sock, selectors.EVENT_READ, partial(self._drain, [0]))

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
            self.selector.unregister(sock)
            _close_quietly(sock)

    def _time_out(self, now: float, stopping_since: float | None, force: bool = False) -> None:
        """Every SWEEP_INTERVAL (and at the end): time out waiting and closing connections."""
        stop = stopping_since is not None and now - stopping_since > STOP_LINGER
        for conn in list(self.waiting):
            if conn.first_byte is None:
                if (
                    force
                    or stopping_since is not None
                    or now - conn.idle_since > self.cfg.keepalive
                ):
                    self._forget(conn)
                    self._close(conn)
            elif force or stop or now - conn.first_byte > self.read_timeout:
                self._forget(conn)
                detail = f"the request did not arrive whole within {self.read_timeout:g} s"
                self._refuse(conn, 408, "Request Timeout", detail)
        for sock, until in list(self.closing.items()):
            if force or now > until:
                del self.closing[sock]
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self.selector.unregister(sock)
                _close_quietly(sock)

    # -- the threads ----------------------------------------------------------------------------

    def _serve(self, conn: Conn) -> None:
        keep = False
        try:
            keep = self._answer(conn)
        except OSError:  # the client went away, or stopped reading for WRITE_TIMEOUT
            self.log.debug("answer to %s not written", _address(conn.peer)[0], exc_info=True)
        finally:
            self.nr += 1
            if self.nr >= self.max_requests and self.alive:
                self.log.info("Autorestarting worker after current request.")
                self.alive = False
            self.finished.put((conn, keep))
            with contextlib.suppress(OSError):
                self.wake_w.send(b"\0")

    def _answer(self, conn: Conn) -> bool:
        """Run the app on the request and write its answer; whether the connection is kept."""
        framer, sock, parser = conn.framer, conn.sock, conn.framer.parser
        assert framer.request is not None
        sock.setblocking(True)
        sock.settimeout(WRITE_TIMEOUT)
        environ = environ_for(
            framer.request, bytes(framer.body), conn.peer, sock.getsockname(), self.base_environ
        )
        environ[ARRIVED_KEY] = conn.arrived
        answer = _Answer(parser, sock, head_only=framer.request.method == b"HEAD")
        try:
            result: Iterable[bytes] = self.wsgi(environ, answer.start_response)
            try:
                for chunk in result:
                    answer.write(chunk)
                answer.finish()
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except OSError:
            raise
        except Exception:  # the app, or an answer h11 cannot frame (a bad header, a wrong length)
            self.log.exception("Error handling request %r", framer.request.target)
            if not answer.sent:  # a 500, unless h11 refused the app's own head (then nothing)
                detail = "unexpected error; it has been logged"
                sock.sendall(problem_answer(parser, 500, "Internal Server Error", detail))
            return False
        # h11 says whether the connection goes on (not after Connection: close, or HTTP/1.0).
        return self.alive and parser.our_state is h11.DONE and parser.their_state is h11.DONE


class _Answer:
    """The WSGI side of one answer: start_response and write, framed by h11. The head goes out
    with the first piece of the body, in one write."""

    def __init__(self, parser: h11.Connection, sock: socket.socket, head_only: bool) -> None:
        self.parser, self.sock, self.head_only = parser, sock, head_only
        self.pending: h11.Response | None = None
        self.sent = False

    def start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: Any = None,
    ) -> Callable[[bytes], None]:
        if exc_info is not None and self.sent:
            raise exc_info[1].with_traceback(exc_info[2])
        code, _, reason = status.partition(" ")
        self.pending = h11.Response(
            status_code=int(code),
            headers=[*headers, ("Date", _http_date())],
            reason=reason.encode("latin-1"),
        )
        return self.write

    def write(self, data: bytes) -> None:
        out = self._head()
        if data and not self.head_only:
            out += self.parser.send(h11.Data(data=data)) or b""
        if out:
            self.sock.sendall(out)

    def finish(self) -> None:
        out = self._head() + (self.parser.send(h11.EndOfMessage()) or b"")
        if out:
            self.sock.sendall(out)

    def _head(self) -> bytes:
        if self.sent:
            return b""
        if self.pending is None:
            raise RuntimeError("the app wrote a body before calling start_response")
        head = self.parser.send(self.pending) or b""
        self.sent = True
        return head


_DATE: tuple[int, str] = (0, "")


def _http_date() -> str:
    """The Date header (RFC 9110 section 6.6.1), formatted once a second."""
    global _DATE
    now = int(time.time())
    if _DATE[0] != now:
        _DATE = (now, formatdate(now, usegmt=True))
    return _DATE[1]


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    """A short answer on a non-blocking socket: it fits in the send buffer, or the client is
    gone (and a half-written answer is all it would have read anyway)."""
    with contextlib.suppress(OSError):
        sock.send(data)


def _close_quietly(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()

"""The roles' own HTTP client against a real server on loopback: keep-alive, retries, headers."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cqrs_common.client import Client, OutcomeUnknownError, UpstreamError
from cqrs_common.limits import MAX_ANSWER_BYTES


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as gunicorn answers
    script: list[tuple[int, dict[str, str]]] = []
    peers: list[int] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.peers.append(self.client_address[1])
        status, headers = self.script.pop(0) if self.script else (200, {})
        answer = b'{"got": ' + body + b"}"
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.script, _Handler.peers = [], []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_calls_reuse_one_connection_and_read_headers_in_any_case(server: str) -> None:
    client = Client(retries=0)
    _Handler.script = [(200, {"X-Mixed-Case": "yes"})]
    first = client.request("POST", f"{server}/a", json=[1])
    second = client.request("POST", f"{server}/b", json=[2])
    assert (first.status_code, first.json(), second.json()) == (200, {"got": [1]}, {"got": [2]})
    assert first.headers["x-mixed-case"] == first.headers.get("X-MIXED-CASE") == "yes"
    assert "Content-Type" in first.headers and "X-Absent" not in first.headers
    assert first.text == '{"got": [1]}' and first.url == f"{server}/a"
    assert len(set(_Handler.peers)) == 1  # the second call went over the same connection
    client.close()


def test_a_busy_peers_retry_after_is_honoured_then_the_answer_returned(server: str) -> None:
    client = Client(retries=2, backoff=5.0)  # without Retry-After the wait would be 5 s+
    _Handler.script = [(503, {"retry-after": "0"}), (429, {"RETRY-AFTER": "0"})]
    response = client.request("POST", server, json=[3])
    assert response.status_code == 200 and len(_Handler.peers) == 3


def test_an_unreachable_or_unknown_target_is_an_upstream_error() -> None:
    client = Client(retries=0)
    with pytest.raises(UpstreamError, match="unreachable"):
        client.request("GET", "http://127.0.0.1:9/")
    with pytest.raises(UpstreamError):
        client.request("GET", "ftp://127.0.0.1/")


# -- the HTTP/1.1 framing itself, against answers written byte by byte ---------------------------


def raw_server(answers: list[bytes]) -> tuple[str, list[bytes]]:
    """A peer that answers each request on one connection with the next of `answers` as given,
    and closes after the last. Returns its URL and the requests it read."""
    listener = socket.create_server(("127.0.0.1", 0))
    got: list[bytes] = []

    def serve() -> None:
        listener.settimeout(10)  # a test that never connects does not leave this thread behind
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            listener.close()
            return
        with conn, listener:
            reader = conn.makefile("rb")
            for answer in answers:
                lines: list[bytes] = []
                while (line := reader.readline()) not in (b"\r\n", b""):
                    lines.append(line)
                if not line:  # the client closed the connection
                    return
                head = b"".join(lines)
                length = re.search(rb"(?i)content-length: (\d+)", head)
                got.append(head + b"\r\n" + reader.read(int(length.group(1)) if length else 0))
                try:
                    conn.sendall(answer)
                except OSError:  # the client refused the answer before reading it all
                    return

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}", got


# The conformance cases: what any transport under Client must do with these answers, written
# byte by byte. Each broken one is an UpstreamError whose outcome is unknown (the request was
# sent: 504), never a response, and never an exception of another kind.
OK_EMPTY = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
TOO_LARGE = MAX_ANSWER_BYTES + 1
BROKEN_ANSWERS = {
    "closed without answering": b"",
    "not HTTP": b"SMTP ready\r\n\r\n",
    "a four-digit status": b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    "a body shorter than its length": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    "a length in words": b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
    "a length in a Unicode digit": "HTTP/1.1 200 OK\r\nContent-Length: \u00b2\r\n\r\nab".encode(),
    "two lengths (5, then 3)": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 3\r\n"
    b"\r\nabcde" + OK_EMPTY,
    "a coding that only contains chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n"
    b"\r\n2\r\n{}\r\n0\r\n\r\n",
    "a bad chunk size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "a body read to the close past the limit": b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * TOO_LARGE,
    "a length past the limit": b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % TOO_LARGE
    + b"x" * TOO_LARGE,
    "chunks past the limit": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"%x\r\n" % TOO_LARGE
    + b"x" * TOO_LARGE
    + b"\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("answer", BROKEN_ANSWERS.values(), ids=BROKEN_ANSWERS.keys())
def test_a_broken_answer_is_an_unknown_outcome_not_a_response(answer: bytes) -> None:
    url, got = raw_server([answer])  # then closes
    with pytest.raises(UpstreamError) as caught:
        Client(retries=0).request("POST", f"{url}/orders", json={"n": 1})
    assert caught.value.status == 504 and len(got) == 1


def test_interim_answers_chunks_extensions_trailers_and_closing_peers_are_read_right() -> None:
    url, got = raw_server([
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4;ext=1\r\n{\"a\"\r\n5\r\n: 1}\n\r\n0\r\nX-Trailer: t\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.0 201 Created\r\nContent-Type: application/json\r\n\r\n[1, 2]",
    ])  # fmt: skip
    client = Client(retries=0)
    first = client.request("POST", f"{url}/x?q=1", data=b"{}", headers={"X-A": "1"})
    assert (first.status_code, first.json()) == (200, {"a": 1})
    second = client.request("GET", url)
    assert (second.status_code, second.content) == (204, b"")
    third = client.request("GET", url)  # its body runs until the close
    assert (third.status_code, third.json()) == (201, [1, 2])
    assert got[0].startswith(b"POST /x?q=1 HTTP/1.1\r\n")
    assert b"X-A: 1\r\n" in got[0] and got[0].endswith(b"\r\n\r\n{}")
    assert got[1].startswith(b"GET / HTTP/1.1\r\n") and b"Content-Length" not in got[1]
    assert len(got) == 3  # all three went over the one connection


def test_a_post_sent_whole_is_never_sent_again_below_the_retry_rule() -> None:
    """The peer read the second POST on a kept-alive connection and closed without answering:
    it may have acted on it. Sending it again is the caller's choice (its retry rule), not the
    transport's, and the caller is told the outcome is unknown."""
    url, got = raw_server([OK_EMPTY, b""])
    client = Client(retries=0)
    assert client.request("POST", url, json={"n": 1}).status_code == 200
    with pytest.raises(UpstreamError) as caught:
        client.request("POST", url, json={"n": 2})
    assert caught.value.status == 504 and len(got) == 2


def test_an_earlier_try_whose_outcome_is_unknown_keeps_the_call_a_504(server: str) -> None:
    _Handler.script = [(504, {}), (503, {"Retry-After": "0"})]
    with pytest.raises(OutcomeUnknownError) as caught:
        Client(retries=1, backoff=0.0).request("POST", server, json=[1])
    assert caught.value.status == 504 and len(_Handler.peers) == 2


def test_a_read_has_no_unknown_outcome(server: str) -> None:
    """A GET cannot have taken effect: a broken answer to one is unavailable (503), not 504."""
    url, _ = raw_server([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"])
    with pytest.raises(UpstreamError) as caught:
        Client(retries=0).request("GET", url)
    assert caught.value.status is None


def test_no_connection_is_unavailable_not_unknown() -> None:
    with pytest.raises(UpstreamError, match="unreachable") as caught:
        Client(retries=1, backoff=0.0).request("POST", "http://127.0.0.1:9/", json=[1])
    assert caught.value.status is None  # answered 503: nothing can have been stored


def test_a_target_with_a_space_or_a_control_character_is_never_written_as_given() -> None:
    url, got = raw_server([OK_EMPTY])
    with contextlib.suppress(UpstreamError, ValueError):  # refused before sending is as good
        Client(retries=0).request("GET", f"{url}/orders/a b HTTP/1.1\x0bX")
    if got:
        line = got[0].split(b"\r\n")[0]
        assert len(line.split(b" ")) == 3 and not re.search(rb"[\x00-\x1f\x7f]", line), line


@pytest.mark.parametrize("value", ["1\r\nX-Evil: 1", "a\x00b", "a\nb", "a\x7fb"])
def test_a_header_with_a_control_character_is_never_sent(value: str) -> None:
    url, got = raw_server([OK_EMPTY])
    with pytest.raises(ValueError, match="invalid header"):
        Client(retries=0).request("GET", url, headers={"X-A": value})
    assert got == []


def test_a_status_a_call_tries_again_is_one_a_delivery_sends_again() -> None:
    """One classification: what the client retries at once, the outbox retries later, never
    parks (and a batch with such an event is failed for now)."""
    from cqrs_common.client import RETRY_STATUSES, failed_for_now
    from cqrs_common.receiver import batch_status

    assert all(failed_for_now(status) for status in RETRY_STATUSES)
    statuses = (400, 401, 403, 404, 409, 413, 415, 422, 429, 500, 501)
    assert [s for s in statuses if failed_for_now(s)] == [404, 409, 429, 500, 501]
    assert batch_status([200, 409]) == 503 and batch_status([200, 422]) == 422

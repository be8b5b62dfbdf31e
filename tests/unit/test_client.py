"""The roles' own HTTP client against a real server on loopback: keep-alive, retries, headers."""

from __future__ import annotations

import http.client
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cqrs_common.client import Client, UpstreamError
from cqrs_common.http1 import ConnectionPool, Headers


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
    with pytest.raises(UpstreamError, match="unreachable"):
        client.request("GET", "ftp://127.0.0.1/")


def test_headers_are_case_insensitive() -> None:
    headers = Headers([("Retry-After", "3")])
    assert headers["retry-after"] == headers.get("RETRY-AFTER") == "3"
    assert headers.get("Location") is None and 5 not in headers


# -- the HTTP/1.1 framing itself, against answers written byte by byte ---------------------------


def raw_server(answers: list[bytes]) -> tuple[str, list[bytes]]:
    """A peer that answers each request on one connection with the next of `answers` as given,
    and closes after the last. Returns its URL and the requests it read."""
    listener = socket.create_server(("127.0.0.1", 0))
    got: list[bytes] = []

    def serve() -> None:
        listener.settimeout(10)  # a test that never connects does not leave this thread behind
        conn, _ = listener.accept()
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
                conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}", got


def test_chunked_bodies_interim_answers_and_closing_peers_are_read_right() -> None:
    url, got = raw_server([
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4;ext=1\r\n{\"a\"\r\n5\r\n: 1}\n\r\n0\r\nX-Trailer: t\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.0 201 Created\r\nContent-Type: application/json\r\n\r\n[1, 2]",
    ])  # fmt: skip
    pool = ConnectionPool(4)
    first = pool.urlopen("POST", f"{url}/x?q=1", b"{}", {"X-A": "1"}, (1.0, 2.0))
    assert (first.status_code, first.json()) == (200, {"a": 1})
    second = pool.urlopen("GET", url, None, {}, (1.0, 2.0))
    assert (second.status_code, second.content) == (204, b"")
    third = pool.urlopen("GET", url, None, {}, (1.0, 2.0))  # its body runs until the close
    assert (third.status_code, third.json()) == (201, [1, 2])
    assert got[0].startswith(b"POST /x?q=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"X-A: 1\r\n" in got[0] and got[0].endswith(b"Content-Length: 2\r\n\r\n{}")
    assert got[1].startswith(b"GET / HTTP/1.1\r\n") and b"Content-Length" not in got[1]
    assert len(got) == 3  # all three went over the one connection


@pytest.mark.parametrize(
    "answer",
    [
        b"",  # closed without answering
        b"SMTP ready\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_a_broken_answer_is_an_error_not_a_response(answer: bytes) -> None:
    url, _ = raw_server([answer])
    with pytest.raises((OSError, http.client.HTTPException)):
        ConnectionPool(1).urlopen("GET", url, None, {}, (1.0, 2.0))


def test_a_header_that_would_split_the_request_is_never_sent() -> None:
    url, got = raw_server([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"])
    with pytest.raises(ValueError, match="invalid header"):
        ConnectionPool(1).urlopen("GET", url, None, {"X-A": "1\r\nX-Evil: 1"}, (1.0, 2.0))
    assert got == []

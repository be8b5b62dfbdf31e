"""The roles' own HTTP client against a real server on loopback: keep-alive, retries, headers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cqrs_common.client import Client, Headers, UpstreamError


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

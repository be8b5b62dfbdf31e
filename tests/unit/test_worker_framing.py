"""The worker's event loop hands a request to a thread only once it has all arrived (framing, by
h11), and the app gets it as a PEP 3333 environ."""

from __future__ import annotations

import pytest

from cqrs_common.gunicorn_worker import (
    BAD_FRAMING,
    COMPLETE,
    HEAD_TOO_LARGE,
    INCOMPLETE,
    TOO_LARGE,
    URI_TOO_LONG,
    Framer,
    environ_for,
    frame,
    problem_answer,
)

HEAD = b"POST / HTTP/1.1\r\nHost: x\r\n"


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


@pytest.mark.parametrize(
    ("data", "verdict"),
    [
        (b"", INCOMPLETE),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n", INCOMPLETE),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", COMPLETE),
        (HEAD + b"Content-Length: 5\r\n\r\n{}", INCOMPLETE),
        (HEAD + b"Content-Length: 5\r\n\r\n{\"a\"}", COMPLETE),
        (HEAD + b"Content-Length: 65537\r\n\r\n", TOO_LARGE),
        (HEAD + b"Content-Length: 99999999999999999999999\r\n\r\n", BAD_FRAMING),
        (HEAD + b"Content-Length: x\r\n\r\n", BAD_FRAMING),
        # the shapes two parsers read differently
        (HEAD + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", BAD_FRAMING),
        (HEAD + b"Transfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n", BAD_FRAMING),
        (HEAD + b"X-A: 1\r\n 2\r\nContent-Length: 2\r\n\r\n{}", BAD_FRAMING),
        (HEAD + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}", BAD_FRAMING),
        (HEAD + b"Transfer-Encoding: xchunked\r\n\r\n", BAD_FRAMING),
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\n2;x\n{}\r\n0\r\n\r\n", BAD_FRAMING),
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nbad\r\n\r\n", BAD_FRAMING),
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\n", INCOMPLETE),
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(b"{}")[:-2], INCOMPLETE),
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(b"{", b"}"), COMPLETE),
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(b"x" * 40_000, b"y" * 30_000),
         TOO_LARGE),
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", BAD_FRAMING),
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n", BAD_FRAMING),
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\n0\r\nTrailer: 1\r\n", INCOMPLETE),
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\n0\r\nTrailer: 1\r\n\r\n", COMPLETE),
        (HEAD + b"X: " + b"a" * 70_000, HEAD_TOO_LARGE),
        (b"GET /" + b"a" * 70_000, URI_TOO_LONG),
    ],
)  # fmt: skip
def test_frame(data: bytes, verdict: str) -> None:
    assert frame(data)[0] == verdict


def test_a_chunked_body_arrives_whole_and_the_next_request_stays() -> None:
    framer = Framer()
    data = HEAD + b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
    assert framer.feed(data) == INCOMPLETE and framer.waits_for_continue
    assert framer.feed(chunked(b"{", b"}") + b"GET /healthz HTTP/1.1\r\n") == COMPLETE
    assert bytes(framer.body) == b"{}"
    assert framer.leftover == b"GET /healthz HTTP/1.1\r\n"


@pytest.mark.parametrize(
    ("line", "verdict"),
    [
        (b"GET /" + b"a" * 4000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", COMPLETE),
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", URI_TOO_LONG),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 8100 + b"\r\n\r\n", COMPLETE),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 9000 + b"\r\n\r\n", HEAD_TOO_LARGE),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: a\r\n" * 99 + b"\r\n", COMPLETE),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: a\r\n" * 100 + b"\r\n", HEAD_TOO_LARGE),
    ],
    ids=["line", "long-line", "field", "long-field", "100-fields", "101-fields"],
)
def test_gunicorns_size_settings_bound_the_line_and_the_fields(line: bytes, verdict: str) -> None:
    assert Framer(limits=(4094, 100, 8190)).feed(line) == verdict


def test_the_environ_is_the_request_with_its_body_whole() -> None:
    framer = Framer()
    request = (
        b"POST /api/orders%2Fx/%C3%A9?a=1&b=%20 HTTP/1.1\r\nHost: shop.example\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\n"
        b"X_Forwarded_For: spoofed\r\n\r\n"
    )
    assert framer.feed(request + chunked(b'{"a":', b"1}")) == COMPLETE
    assert framer.request is not None
    environ = environ_for(framer.request, bytes(framer.body), ("10.1.2.3", 5555), ("0.0.0.0", 80))
    assert environ["REQUEST_METHOD"] == "POST"
    assert environ["PATH_INFO"] == "/api/orders/x/\xc3\xa9"  # bytes as latin-1 (PEP 3333)
    assert environ["QUERY_STRING"] == "a=1&b=%20"
    assert environ["CONTENT_TYPE"] == "application/json"
    assert environ["CONTENT_LENGTH"] == "7"
    assert environ["wsgi.input"].read() == b'{"a":1}'
    assert environ["HTTP_X_FORWARDED_FOR"] == "10.0.0.1,10.0.0.2"  # the underscored one dropped
    assert "HTTP_TRANSFER_ENCODING" not in environ
    assert environ["HTTP_HOST"] == "shop.example"
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("10.1.2.3", "5555")
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"


def test_frame_asks_for_the_body_when_the_client_expects_100_continue() -> None:
    head = HEAD + b"Content-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    assert frame(head) == (INCOMPLETE, True)
    assert frame(head + b"{")[1] is False  # the body has begun: no interim answer now
    too_big = HEAD + b"Content-Length: 70000\r\nExpect: 100-continue\r\n\r\n"
    assert frame(too_big) == (TOO_LARGE, False)  # refused before the client sends it


def test_errors_are_problem_json_and_close_the_connection() -> None:
    framer = Framer()
    assert framer.feed(HEAD + b"X: " + b"a" * 70_000) == HEAD_TOO_LARGE
    answer = problem_answer(framer.parser, 431, "Request Header Fields Too Large", "too big")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 ")
    assert b"Content-Type: application/problem+json" in head
    assert b"Connection: close" in head
    assert int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]) == len(body)


def test_the_worker_uses_gunicorns_documented_worker_interface_only() -> None:
    """A worker class on gunicorn.workers.base.Worker, nothing of gunicorn's other workers or
    of its HTTP parser: no gunicorn series needs pinning (requirements.in)."""
    import inspect
    import re

    from gunicorn.workers.base import Worker

    from cqrs_common import gunicorn_worker

    assert gunicorn_worker.H11Worker.__bases__ == (Worker,)
    # Read as text: CPython 3.11's ast.parse can fail with a SystemError in a process that has
    # met a RecursionError before (as the deeply nested JSON tests make it).
    source = inspect.getsource(gunicorn_worker)
    imported = set(re.findall(r"^\s*(?:from|import)\s+(gunicorn[\w.]*)", source, re.MULTILINE))
    assert imported == {"gunicorn.workers.base"}

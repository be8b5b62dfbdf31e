"""The worker's event loop hands a request to a thread only once it has all arrived: framing."""

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
    error_status,
    frame,
    problem_bytes,
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


def test_the_thread_gets_the_request_framed_by_its_length_and_the_rest_stays() -> None:
    framer = Framer()
    data = HEAD + b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
    assert framer.feed(data) == INCOMPLETE and framer.waits_for_continue
    assert framer.feed(chunked(b"{", b"}") + b"GET /healthz HTTP/1.1\r\n") == COMPLETE
    request, leftover = framer.reframed()
    assert request == HEAD + b"Content-Length: 2\r\n\r\n{}"
    assert leftover == b"GET /healthz HTTP/1.1\r\n"


def test_frame_asks_for_the_body_when_the_client_expects_100_continue() -> None:
    head = HEAD + b"Content-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    assert frame(head) == (INCOMPLETE, True)
    assert frame(head + b"{")[1] is False  # the body has begun: no interim answer now
    too_big = HEAD + b"Content-Length: 70000\r\nExpect: 100-continue\r\n\r\n"
    assert frame(too_big) == (TOO_LARGE, False)  # refused before the client sends it


def test_errors_are_problem_json_and_close_the_connection() -> None:
    answer = problem_bytes(431, "Request Header Fields Too Large", "too big")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 ")
    assert b"Content-Type: application/problem+json" in head
    assert b"Connection: close" in head
    assert int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]) == len(body)


def test_gunicorns_errors_keep_their_status() -> None:
    from gunicorn.http import errors

    assert error_status(errors.LimitRequestLine(5000, 4094)) == (414, "URI Too Long")
    assert error_status(errors.LimitRequestHeaders("x"))[0] == 431
    assert error_status(errors.InvalidHeader("x"))[0] == 400
    assert error_status(errors.InvalidResponseHeader("x"))[0] == 500
    assert error_status(RuntimeError("x"))[0] == 500

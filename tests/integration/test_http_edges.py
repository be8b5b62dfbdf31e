"""A role under gunicorn, as in its container, against clients that misbehave on the wire: slow,
silent, oversized, malformed. It keeps answering, and every refusal is problem+json."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cloudevents.core.bindings.http import to_structured_event

from cqrs_common import events
from cqrs_common.cloudevents_io import new_event
from cqrs_common.domain import now_iso
from cqrs_common.limits import MAX_BODY_BYTES
from devtools.stack import Stack, free_ports

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
READ_TIMEOUT = 3  # REQUEST_READ_TIMEOUT for these roles, so a test waits seconds
# Generous: the machine may be busy; what matters is an answer, not its speed.
HEALTHZ_BOUND = 10.0
SMUGGLING_HEAD = b"POST / HTTP/1.1\r\nHost: x\r\n"


def lowest_gunicorn() -> Path:
    """The oldest gunicorn functions/requirements.in allows, installed once into a cache folder
    (pip, from the package index), for the roles to import before the locked one."""
    spec = (ROOT / "functions" / "requirements.in").read_text(encoding="utf-8")
    version = re.search(r"^gunicorn>=([\d.]+)$", spec, re.MULTILINE).group(1)  # type: ignore[union-attr]
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    site = Path(base) / "cqrs-shop" / f"gunicorn-{version}"
    if not (site / "gunicorn" / "__init__.py").is_file():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
             str(site), f"gunicorn=={version}"],
            check=True,
        )  # fmt: skip
    return site


@pytest.fixture(
    scope="module", params=["locked", "lowest"], ids=["gunicorn-locked", "gunicorn-lowest"]
)
def roles(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The dispatcher and order-db alone (nothing behind them), relay off; on the gunicorn of
    the lock, then on the oldest requirements.in allows (the worker pins no series)."""
    data = tmp_path_factory.mktemp("edges")
    stack = Stack(
        data,
        ports=free_ports(),
        log_dir=data / "logs",
        extra_env={"RELAY_ENABLED": "0", "REQUEST_READ_TIMEOUT": str(READ_TIMEOUT)},
        supervise=False,
        site=lowest_gunicorn() if request.param == "lowest" else None,
    )
    for role in ("dispatcher", "order-db"):
        stack.spawn(role)
    stack.wait_ready(["dispatcher", "order-db"])
    if stack.site is not None:  # the roles do run on that gunicorn (its start line says which)
        version = stack.site.name.removeprefix("gunicorn-")
        log = (data / "logs" / "order-db.log").read_text(encoding="utf-8")
        assert f"Starting gunicorn {version}" in log, log[-2000:]
    yield stack
    stack.stop()


def address(stack: Stack, role: str) -> tuple[str, int]:
    return ("127.0.0.1", stack.ports[role])


def exchange(addr: tuple[str, int], data: bytes, timeout: float = 20.0) -> tuple[bytes, bool]:
    """Send raw bytes; return what came back and whether the server closed the connection."""
    with socket.create_connection(addr, timeout=timeout) as sock:
        sock.sendall(data)
        return read_all(sock, timeout)


def read_all(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    out, deadline = b"", time.monotonic() + timeout
    sock.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            if b"\r\n\r\n" in out and _whole(out):
                return out, False
            continue
        except ConnectionResetError:
            return out, True
        if not chunk:
            return out, True
        out += chunk
    return out, False


def _whole(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return True


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def head_of(answer: bytes) -> str:
    return answer.partition(b"\r\n\r\n")[0].decode("latin-1").lower()


def problem_of(answer: bytes) -> dict:
    assert "content-type: application/problem+json" in head_of(answer), answer[:400]
    return json.loads(answer.partition(b"\r\n\r\n")[2])


def chunked(body: bytes, size: int = 8192) -> bytes:
    parts = [b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
             for i in range(0, len(body), size)]  # fmt: skip
    return b"".join(parts) + b"0\r\n\r\n"


def placed(order_id: str, padding: int = 0) -> tuple[dict[str, str], bytes]:
    data = {"orderId": order_id, "product": "pear", "quantity": 1, "unitPrice": "0.50",
            "placedAt": now_iso()}  # fmt: skip
    message = to_structured_event(new_event(events.ORDER_PLACED, "/test", order_id, data))
    return dict(message.headers), message.body + b" " * padding  # whitespace: still valid JSON


def order_ids(stack: Stack) -> set[str]:
    page = requests.get(f"{stack.url('order-db')}/orders", timeout=10).json()
    return {order["orderId"] for order in page["orders"]}


def healthz_seconds(stack: Stack, role: str) -> float:
    started = time.monotonic()
    response = requests.get(f"{stack.url(role)}/healthz", timeout=60)
    assert response.status_code == 200
    return time.monotonic() - started


# -- slow and silent clients ----------------------------------------------------------------------


@pytest.mark.parametrize("count", [8, 64, 512])
def test_stalled_connections_do_not_starve_the_role(roles: Stack, count: int) -> None:
    """Half send nothing, half stop in the middle of a body: probes and orders still answer
    (the times are printed; the bound only says an answer came). On gunicorn's own gthread,
    8 made the first /healthz wait 4.5 s, and with 64 or 512 it had no answer within 60 s."""
    addr = address(roles, "order-db")
    stalled: list[socket.socket] = []
    try:
        for n in range(count):
            sock = socket.create_connection(addr, timeout=10)
            if n % 2:
                sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            stalled.append(sock)
        time.sleep(0.5)
        took = [healthz_seconds(roles, "order-db") for _ in range(5)]
        headers, body = placed(f"edge-while-{count}-stalled")
        started = time.monotonic()
        response = requests.post(roles.url("order-db"), headers=headers, data=body, timeout=30)
        order = time.monotonic() - started
        probes = ", ".join(f"{t * 1000:.1f}" for t in took)
        print(f"\n{count} stalled: /healthz {probes} ms, an order {order * 1000:.1f} ms")
        assert response.status_code == 201, response.text
        assert max(took) < HEALTHZ_BOUND and order < HEALTHZ_BOUND, (took, order)
    finally:
        for sock in stalled:
            sock.close()


def test_a_request_that_never_finishes_gets_a_408_then_the_connection_closes(
    roles: Stack,
) -> None:
    with socket.create_connection(address(roles, "order-db"), timeout=30) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
        started = time.monotonic()
        answer, closed = read_all(sock, timeout=READ_TIMEOUT + 20)
    assert status_of(answer) == 408, answer[:300]
    assert problem_of(answer)["status"] == 408
    assert closed
    assert time.monotonic() - started >= READ_TIMEOUT - 0.5


def test_slow_bodies_behind_two_transfer_encodings_are_refused_in_the_loop(roles: Stack) -> None:
    """The framing must not call such a request whole at its headers: gunicorn would then read
    the slowly sent body in a thread, and 8 of them held every thread (/readyz after 9.7 s)."""
    addr = address(roles, "order-db")
    head = SMUGGLING_HEAD + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n"
    socks = [socket.create_connection(addr, timeout=10) for _ in range(16)]
    try:
        for sock in socks:
            sock.sendall(head)  # and no more of the body
        answers = [read_all(sock, timeout=READ_TIMEOUT + 10) for sock in socks]
        assert [status_of(answer) for answer, _ in answers] == [400] * 16, answers[0][0][:300]
        # by the loop, on the headers: not by a thread's read running into the read timeout
        details = {problem_of(answer)["detail"] for answer, _ in answers}
        assert all(d.startswith("malformed request") for d in details), details
        assert all(closed for _, closed in answers)
        assert healthz_seconds(roles, "order-db") < HEALTHZ_BOUND
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.parametrize("size_line", [b'2;"', b"2;x ", b"2 ", b"2;a=b;c"])
def test_a_chunk_extension_is_never_a_500(roles: Stack, size_line: bytes) -> None:
    headers, body = placed(f"edge-ext-{size_line.hex()}")
    head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    head += b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in headers.items())
    chunk = size_line.replace(b"2", b"%x" % len(body), 1) + b"\r\n" + body + b"\r\n0\r\n\r\n"
    answer, _ = exchange(address(roles, "order-db"), head + b"\r\n" + chunk)
    assert 200 <= status_of(answer) < 500, answer[:300]


# -- gunicorn's own refusals ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"GET /healthz HTTP/1.1\r\n" + b"X-Many: a\r\n" * 7000 + b"\r\n", 431),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", 400),
        (b"GARBAGE\r\n\r\n", 400),
        # Shapes two parsers read differently (request smuggling): refused, never guessed at.
        (SMUGGLING_HEAD + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (
            SMUGGLING_HEAD
            + b"Transfer-Encoding: chunked\r\nContent-Length: 7\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            400,
        ),
        (SMUGGLING_HEAD + b"X-A: 1\r\n 2\r\nContent-Length: 2\r\n\r\n{}", 400),
        (SMUGGLING_HEAD + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400),
        (SMUGGLING_HEAD + b"Transfer-Encoding: xchunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 400),
        (SMUGGLING_HEAD + b"Transfer-Encoding: chunked\r\n\r\n2;x\n{}\r\n0\r\n\r\n", 400),
        (SMUGGLING_HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nbad\r\n\r\n", 400),
        (
            SMUGGLING_HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nX: a\x00b\r\n\r\n",
            400,
        ),
    ],
    ids=[
        "bad-header",
        "long-uri",
        "huge-uri",
        "big-header",
        "many-headers",
        "bad-chunk",
        "junk",
        "two-te",
        "te-and-cl",
        "obs-fold",
        "two-cl",
        "xchunked",
        "chunk-ext-bare-lf",
        "trailer-no-colon",
        "trailer-nul",
    ],
)
def test_gunicorns_refusals_are_problem_json_and_close(
    roles: Stack, request_bytes: bytes, status: int
) -> None:
    answer, closed = exchange(address(roles, "order-db"), request_bytes)
    assert status_of(answer) == status, answer[:300]
    assert problem_of(answer)["status"] == status
    assert "connection: close" in head_of(answer)
    assert closed


# -- bodies past the limit ------------------------------------------------------------------------


def test_a_chunked_body_past_64_kib_is_a_413_never_truncated(roles: Stack) -> None:
    headers, body = placed("edge-chunked-big", padding=MAX_BODY_BYTES)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request_bytes = (
        f"POST / HTTP/1.1\r\nHost: x\r\n{head}Transfer-Encoding: chunked\r\n\r\n".encode()
        + chunked(body)
    )
    answer, closed = exchange(address(roles, "order-db"), request_bytes)
    assert status_of(answer) == 413, answer[:300]
    assert problem_of(answer)["status"] == 413
    assert "connection: close" in head_of(answer) and "keep-alive" not in head_of(answer)
    assert closed
    assert "edge-chunked-big" not in order_ids(roles)


def test_a_declared_body_past_64_kib_is_a_413_and_the_connection_closes(roles: Stack) -> None:
    headers, body = placed("edge-length-big", padding=MAX_BODY_BYTES)
    response = requests.post(roles.url("order-db"), headers=headers, data=body, timeout=30)
    assert response.status_code == 413
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.headers["Connection"] == "close"
    assert "edge-length-big" not in order_ids(roles)
    # The dispatcher's public API, through requests' own chunked upload.
    big = json.dumps({"product": "apple", "quantity": 1, "unitPrice": "1"}) + " " * 70_000
    response = requests.post(
        f"{roles.url('dispatcher')}/api/orders",
        data=iter([big.encode()[i : i + 4096] for i in range(0, len(big), 4096)]),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 413
    assert response.headers["Connection"] == "close"


# -- what must keep working ------------------------------------------------------------------------


def test_a_chunked_event_within_the_limit_is_taken_whole(roles: Stack) -> None:
    headers, body = placed("edge-chunked-ok", padding=MAX_BODY_BYTES // 2)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request_bytes = (
        f"POST / HTTP/1.1\r\nHost: x\r\n{head}Transfer-Encoding: chunked\r\n\r\n".encode()
        + chunked(body, size=1000)
    )
    answer, _ = exchange(address(roles, "order-db"), request_bytes)
    assert status_of(answer) == 201, answer[:300]
    assert "edge-chunked-ok" in order_ids(roles)


def test_pipelined_requests_on_one_connection_are_all_answered(roles: Stack) -> None:
    one = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(address(roles, "order-db"), timeout=20) as sock:
        sock.sendall(one * 3)
        answers = b""
        deadline = time.monotonic() + 20
        while answers.count(b'{"status":"alive"}') < 3 and time.monotonic() < deadline:
            answers += sock.recv(65536)
    assert answers.count(b"HTTP/1.1 200") == 3, answers


def test_expect_100_continue_is_answered_before_the_body(roles: Stack) -> None:
    headers, body = placed("edge-continue")
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection(address(roles, "order-db"), timeout=20) as sock:
        sock.sendall(
            f"POST / HTTP/1.1\r\nHost: x\r\n{head}Content-Length: {len(body)}\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        interim = sock.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        sock.sendall(body)
        answer, _ = read_all(sock, timeout=20)
    assert status_of(answer) == 201, answer[:300]
    assert b"100 Continue" not in answer  # once only


def test_deeply_nested_json_through_gunicorn_is_a_400(roles: Stack) -> None:
    deep = "[" * 30_000 + "]" * 30_000
    response = requests.post(
        f"{roles.url('dispatcher')}/api/orders",
        data=deep,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/problem+json"

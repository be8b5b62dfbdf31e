"""Helpers for tests: a client of the public API, polling with a deadline, a stand-in server."""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any, TypeVar

import requests

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.1) -> T:
    """Poll until `check` returns something truthy; the read side is eventually consistent."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"not reached within {timeout}s; last value {last!r}")


def totals(base_url: str) -> dict[str, tuple[int, Decimal]]:
    stats = requests.get(f"{base_url}/api/stats", timeout=10).json()
    return {
        product: (row["quantity"], Decimal(row["totalPrice"]))
        for product, row in stats["products"].items()
    } | {"orders": (stats["ordersCounted"], Decimal(0))}


def place(base_url: str, product: str, quantity: int, unit_price: str, key: str | None = None,
          session: requests.Session | None = None) -> requests.Response:  # fmt: skip
    headers = {"Idempotency-Key": key} if key else {}
    return (session or requests).post(
        f"{base_url}/api/orders",
        json={"product": product, "quantity": quantity, "unitPrice": unit_price},
        headers=headers,
        timeout=30,
    )


def expected_after(before: dict[str, tuple[int, Decimal]], orders: list[tuple[str, int, str]]
                   ) -> dict[str, tuple[int, Decimal]]:  # fmt: skip
    after = dict(before)
    for product, quantity, price in orders:
        qty, total = after[product]
        after[product] = (qty + quantity, total + Decimal(price) * quantity)
    count, zero = after["orders"]
    after["orders"] = (count + len(orders), zero)
    return after


def problem_of(response: requests.Response) -> dict[str, Any]:
    assert response.headers["Content-Type"].startswith("application/problem+json"), response.text
    return response.json()


@contextlib.contextmanager
def json_server(
    body: bytes, seen: Callable[[http.server.BaseHTTPRequestHandler], None]
) -> Iterator[str]:
    """A loopback server answering every GET and POST with 200 and `body` (JSON); `seen` is
    called with each request's handler. Yields its base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            seen(self)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()

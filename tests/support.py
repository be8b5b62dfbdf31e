"""Helpers for tests: a role's settings, a client of the public API, polling with a deadline, a
stand-in server."""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any, TypeVar

import requests

from cqrs_common.config import Settings
from cqrs_common.roles import ROLES_BY_NAME
from devtools.stack import wiring

T = TypeVar("T")
# Nothing listens there (the discard port): a role's calls fail at once, as to a role away.
NOWHERE = "http://127.0.0.1:9"


def role_settings(role: str, **env: str) -> Settings:
    """A role's Settings wired as `make run` wires it, every other role at NOWHERE, `env` on
    top (DATABASE_URL for a role with a store)."""
    wired = wiring(ROLES_BY_NAME[role], lambda _name: NOWHERE, env.pop("DATABASE_URL", None))
    return Settings.from_env(role, {**wired, **env})


def wait_for(
    check: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.1, what: str = ""
) -> T:
    """Poll until `check` returns something truthy; the read side is eventually consistent.
    `what` names what was awaited in the error."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what or 'not'} reached within {timeout}s; last value {last!r}")


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

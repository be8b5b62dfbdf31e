"""Fault injection helpers: a careful client, a faulty event hop, rewired stacks, the logs."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from devtools.stack import Stack, free_ports
from tests.support import place

PRICES = ["0.10", "0.01", "1.50", "2.99", "0", "10", "999999.99"]
ZERO = {"apple": (0, Decimal(0)), "pear": (0, Decimal(0)), "orders": (0, Decimal(0))}
# What tests.conftest.start_stack sets: quick relay retries, so a test waits seconds, not minutes.
FAST_RELAY = {"RELAY_BASE_DELAY": "0.2", "RELAY_MAX_DELAY": "2", "RELAY_POLL_INTERVAL": "1"}

Order = tuple[str, int, str]


def random_orders(count: int, seed: int) -> list[Order]:
    rng = random.Random(seed)
    return [(rng.choice(["apple", "pear"]), rng.randint(1, 5), rng.choice(PRICES))
            for _ in range(count)]  # fmt: skip


def place_carefully(base_url: str, order: Order, key: str, session: requests.Session,
                    deadline: float) -> str:  # fmt: skip
    """Place one order as a careful client does: on a connection error or a 5xx, retry with the
    same Idempotency-Key until a 202 or the deadline. Returns the order id."""
    product, quantity, price = order
    last = "nothing yet"
    while time.monotonic() < deadline:
        try:
            response = place(base_url, product, quantity, price, key, session)
        except requests.RequestException as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if response.status_code == 202:
                return response.json()["orderId"]
            if response.status_code < 500:
                raise AssertionError(f"order {key} refused: {response.status_code} {response.text}")
            last = f"{response.status_code} {response.text[:200]}"
        time.sleep(0.1)
    raise AssertionError(f"order {key} not accepted before the deadline; last: {last}")


def place_all(base_url: str, orders: list[Order], clients: int = 8,
              timeout: float = 120.0) -> list[str]:  # fmt: skip
    """Place every order from `clients` threads, carefully; returns the order ids in order."""
    deadline = time.monotonic() + timeout
    keys = [str(uuid.uuid4()) for _ in orders]
    ids: list[str] = [""] * len(orders)

    def worker(indexes: list[int]) -> None:
        with requests.Session() as session:
            for i in indexes:
                ids[i] = place_carefully(base_url, orders[i], keys[i], session, deadline)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, [list(range(len(orders)))[c::clients] for c in range(clients)]))
    return ids


def order_log(stack: Stack) -> list[dict[str, Any]]:
    """Every order in order-db's log, read page by page as replay does."""
    orders: list[dict[str, Any]] = []
    after: int | None = 0
    while after is not None:
        page = requests.get(
            f"{stack.url('order-db')}/orders", params={"after": after, "limit": 1000}, timeout=10
        ).json()
        orders += page["orders"]
        after = page["next"]
    return orders


def outbox(stack: Stack, status: str) -> dict[str, Any]:
    url = f"{stack.url('order-db')}/outbox"
    response = requests.get(url, params={"status": status}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def log_lines(stack: Stack, role: str) -> Iterator[dict[str, Any]]:
    """The JSON lines of a role's log (other lines, if any, are skipped)."""
    assert stack.log_dir is not None
    path = stack.log_dir / f"{role}.log"
    if not path.exists():
        return
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            yield record


class RewiredStack(Stack):
    """A Stack whose producers may send their events somewhere else than the next role (a faulty
    hop in between, as a broker would be)."""

    def __init__(self, *args: Any, sinks: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sinks = sinks or {}

    def env_for(self, role: str) -> dict[str, str]:
        env = super().env_for(role)
        if role in self.sinks:
            env["K_SINK"] = self.sinks[role]
        return env


def start_rewired(data_dir: Path, sinks: dict[str, str], extra_env: dict[str, str] | None = None,
                  ports: dict[str, int] | None = None) -> RewiredStack:  # fmt: skip
    """Like tests.conftest.start_stack, with `sinks` (role -> URL) overriding K_SINK."""
    stack = RewiredStack(
        data_dir,
        ports=ports or free_ports(),
        log_dir=data_dir / "logs",
        extra_env={**FAST_RELAY, **(extra_env or {})},
        sinks=sinks,
    )
    return stack.start()  # type: ignore[return-value]


def restarted(stack: Stack) -> Stack:
    """A new stack on the same ports, stores and settings (after `stack.stop()`)."""
    kwargs: dict[str, Any] = {}
    if isinstance(stack, RewiredStack):
        kwargs["sinks"] = stack.sinks
    again = type(stack)(
        stack.data_dir,
        ports=stack.ports,
        database_urls=stack.database_urls,
        extra_env=stack.extra_env,
        log_dir=stack.log_dir,
        **kwargs,
    )
    return again.start()


class FaultyHop:
    """An HTTP hop that forwards CloudEvents to `target`, slowly or not at all when told to.

    `delay` seconds are spent before forwarding; events whose `ce-subject` is in `refuse` are
    answered 400, as a receiver that can never take them would; with `status` set, every event
    is answered that status and forwarded nowhere (a receiver that is down).
    """

    def __init__(self, target: str = "") -> None:
        self.target = target
        self.delay = 0.0
        self.refuse: set[str] = set()
        self.status: int | None = None
        self.received: list[dict[str, str]] = []
        self.arrived = threading.Event()
        hop = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower().startswith("ce-") or k.lower() == "content-type"
                }
                # All of them recorded (budgets, trace headers); only the event passed on.
                hop.received.append({k.lower(): v for k, v in self.headers.items()})
                hop.arrived.set()
                if hop.delay:
                    time.sleep(hop.delay)
                if self.headers.get("ce-subject") in hop.refuse:
                    self._answer(400, b'{"title": "refused by the faulty hop"}')
                    return
                if hop.status is not None:
                    self._answer(hop.status, b'{"title": "set by the test"}')
                    return
                try:
                    upstream = requests.post(hop.target, headers=headers, data=body, timeout=30)
                    self._answer(upstream.status_code, upstream.content)
                except requests.RequestException:
                    self._answer(502, b'{"title": "target unreachable"}')

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

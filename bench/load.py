"""The load generator: a few threads with keep-alive connections, bounded by count and time.

Kept lean on purpose (http.client, no requests): the client shares the machine's cores with the
six roles, so every microsecond it spends is one the shop does not get.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

PRODUCTS = ("apple", "pear")
PRICES = ("0.10", "1.50", "2.99", "10")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


class Connection:
    """One keep-alive HTTP/1.1 connection to a loopback URL, reopened after an error."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, bytes]:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self._conn.request(method, path, body=body, headers=headers or {})
            response = self._conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise

    def get_json(self, path: str) -> dict:
        status, body = self.request("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}: {body[:200]!r}")
        return json.loads(body)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass
class Phase:
    """What one burst of orders measured."""

    name: str
    clients: int
    requested: int
    accepted_at: list[float] = field(default_factory=list)  # monotonic, when each 202 came back
    latencies: list[float] = field(default_factory=list)  # seconds, accepted orders only
    errors: int = 0
    started: float = 0.0
    finished: float = 0.0

    @property
    def accepted(self) -> int:
        return len(self.accepted_at)

    @property
    def rate(self) -> float:
        span = self.finished - self.started
        return self.accepted / span if span > 0 else float("nan")

    def latency_ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000


def progress(label: str, done: int, total: int, started: float) -> None:
    """A one-line progress bar on stderr, redrawn in place on a terminal. Elsewhere (a log, CI)
    a plain line every LOG_EVERY seconds instead, so a long phase still shows it is moving."""
    if not sys.stderr.isatty():
        _log_progress(label, done, total, started)
        return
    width = 30
    filled = int(width * done / total) if total else width
    elapsed = time.monotonic() - started
    rate = done / elapsed if elapsed > 0 else 0.0
    bar = "#" * filled + "." * (width - filled)
    sys.stderr.write(f"\r  {label:<28} [{bar}] {done:>6}/{total:<6} {rate:6.0f}/s ")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


LOG_EVERY = 15.0
_last_logged: dict[str, float] = {}


def _log_progress(label: str, done: int, total: int, started: float) -> None:
    now = time.monotonic()
    if done >= total or now - _last_logged.get(label, started) < LOG_EVERY:
        return
    _last_logged[label] = now
    rate = done / (now - started) if now > started else 0.0
    print(f"  {label}: {done:,} of {total:,} orders, {rate:,.0f}/s", file=sys.stderr, flush=True)


HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


def order_body(n: int, seed: int) -> bytes:
    """The n-th order: products, quantities and prices vary, so totals are not one repeated sum."""
    return json.dumps(
        {
            "product": PRODUCTS[n % 2],
            "quantity": 1 + (n + seed) % 5,
            "unitPrice": PRICES[n % len(PRICES)],
        }
    ).encode()


@dataclass
class _Orders:
    """What the client threads of one phase share: the next order number and where to report."""

    base_url: str
    count: int
    deadline: float  # monotonic
    phase: Phase
    done: list[int]  # orders sent per thread: progress without a shared lock
    seed: int = field(default_factory=os.getpid)
    numbers: itertools.count = field(default_factory=itertools.count)  # next() is atomic (GIL)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, slot: int) -> None:
        """One thread: POST orders until there are none left or time is up, one at a time on a
        keep-alive connection; the results are merged into the phase once, at the end."""
        conn = Connection(self.base_url)
        latencies: list[float] = []
        accepted: list[float] = []
        errors = 0
        while (n := next(self.numbers)) < self.count and time.monotonic() < self.deadline:
            body = order_body(n, self.seed)
            started = time.monotonic()
            try:
                status, _ = conn.request("POST", "/api/orders", body, HEADERS)
            except (OSError, http.client.HTTPException):
                status = 0
            ended = time.monotonic()
            if status == 202:
                latencies.append(ended - started)
                accepted.append(ended)
            else:
                errors += 1
            self.done[slot] += 1
        conn.close()
        with self.lock:
            self.phase.latencies.extend(latencies)
            self.phase.accepted_at.extend(accepted)
            self.phase.errors += errors


def place_orders(
    base_url: str, count: int, clients: int, name: str = "", time_limit: float = 300.0
) -> Phase:
    """POST `count` orders to /api/orders from `clients` threads as fast as they are answered."""
    phase = Phase(name or f"{clients} clients", clients, count)
    orders = _Orders(base_url, count, time.monotonic() + time_limit, phase, [0] * clients)
    threads = [
        threading.Thread(target=orders.client, args=(i,), daemon=True) for i in range(clients)
    ]
    phase.started = time.monotonic()
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        progress(phase.name, sum(orders.done), count, phase.started)
        time.sleep(0.25)
    for thread in threads:
        thread.join()
    phase.finished = time.monotonic()
    progress(phase.name, count, count, phase.started)
    phase.accepted_at.sort()
    return phase


class CountSampler:
    """Polls GET /api/stats and records (time, ordersCounted): when orders became visible."""

    def __init__(self, base_url: str, interval: float = 0.02) -> None:
        self.base_url = base_url
        self.conn = Connection(base_url)
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def counted(self) -> int:
        return int(self.conn.get_json("/api/stats")["ordersCounted"])

    def _run(self) -> None:
        conn = Connection(self.base_url)
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                counted = int(conn.get_json("/api/stats")["ordersCounted"])
            except (OSError, http.client.HTTPException, RuntimeError, ValueError):
                continue
            # The store was read somewhere between send and answer: take the middle.
            self.samples.append(((sent + time.monotonic()) / 2, counted))
            self._stop.wait(self.interval)
        conn.close()

    def start(self) -> CountSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def wait_for(
        self,
        target: int,
        timeout: float,
        on_wait: Callable[[int], None] | None = None,
        every: float = 10.0,
    ) -> float:
        """Poll until ordersCounted reaches `target`; returns when (monotonic) it was seen.
        A long wait calls `on_wait(counted)` every `every` seconds, for a progress line."""
        started = time.monotonic()
        deadline, next_note = started + timeout, started + every
        while time.monotonic() < deadline:
            sent = time.monotonic()
            counted = self.counted()
            if counted >= target:
                return (sent + time.monotonic()) / 2
            if on_wait is not None and sent >= next_note:
                on_wait(counted)
                next_note = sent + every
            time.sleep(self.interval)
        raise TimeoutError(f"ordersCounted did not reach {target} within {timeout:.0f}s")


def visibility_lags(phase: Phase, base_count: int, samples: list[tuple[float, int]]) -> list[float]:
    """Seconds from each 202 to the first sample whose ordersCounted includes that order.

    The k-th accepted order counts as visible once ordersCounted >= base + k: orders are projected
    about in the order they are accepted, and a sample shows all of them up to that count. The
    result is an upper bound, off by at most the sampling interval.
    """
    lags: list[float] = []
    index = 0
    for k, accepted in enumerate(phase.accepted_at, start=1):
        while index < len(samples) and (
            samples[index][1] < base_count + k or samples[index][0] < accepted
        ):
            index += 1
        if index == len(samples):
            break
        lags.append(samples[index][0] - accepted)
    return lags

"""Prometheus metrics of every role: requests, latency, busy threads, store errors, the outbox,
the read side's deltas and how far the read side is behind the write side. `GET /metrics`.

One registry per process (REGISTRY), served in the text exposition format. Gauges that read a
store are collectors called at scrape time (register_outbox, register_orders_logged, ...), so a
scrape costs one small query and no background loop keeps a scaled-to-zero pod busy.

Under gunicorn a role runs one worker process (WEB_CONCURRENCY=1), so the in-process registry is
the whole truth. With WEB_CONCURRENCY>1 each worker would answer with its own numbers: switch to
prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR set before the workers start, a
MultiProcessCollector in the /metrics view, mark_process_dead in gunicorn's child_exit hook and
a multiprocess_mode on every Gauge); the store collectors need no change, any worker may run them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from flask import Flask, Response, g, request
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
# The text format every Prometheus (2.x included) and agent reads; our names need nothing newer.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# 1 ms to 10 s: a store hit is a few ms, a cold start through the activator several seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Any other method is counted as "other": a client must not be able to mint label values.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "<unmatched>"  # 404s: the raw path would be unbounded
OUTCOMES_DELIVERY = ("sent", "delayed", "parked")
OUTCOMES_DELTA = ("applied", "duplicate", "refused")

# The *_created series double the exposition and no query here uses them.
disable_created_metrics()
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # process_* : CPU, memory, open files, start time

HTTP_REQUESTS = Counter(
    "cqrs_http_requests",
    "HTTP requests answered, by route (the URL rule, not the path) and status.",
    ["role", "route", "method", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "cqrs_http_request_duration_seconds",
    "Time from the request reaching Flask to its response, by route.",
    ["role", "route", "method"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
HTTP_IN_FLIGHT = Gauge(
    "cqrs_http_requests_in_flight",
    "Requests being served now: the worker threads busy.",
    ["role"],
    registry=REGISTRY,
)
WORKER_THREADS = Gauge(
    "cqrs_worker_threads",
    "Worker threads the role serves requests with (gunicorn's threads): in flight / this = busy.",
    ["role"],
    registry=REGISTRY,
)
COUNTED_NOT_LOGGED = Gauge(
    "cqrs_orders_counted_not_logged",
    "Orders the totals count that the order log does not hold (0 unless the write store lost"
    " acknowledged orders): query-order, as of its last /stats.",
    registry=REGISTRY,
)
STORE_ERRORS = Counter(
    "cqrs_store_errors",
    "Store operations that failed (the store unreachable or refusing), answered 503 or retried.",
    ["role"],
    registry=REGISTRY,
)
OUTBOX_DELIVERIES = Counter(
    "cqrs_outbox_deliveries",
    "order-db's relay attempts by outcome: sent (2xx), delayed (transient, retried), parked.",
    ["outcome"],
    registry=REGISTRY,
)
DELTAS = Counter(
    "cqrs_deltas",
    "stats-order-db's stats.delta events: applied, duplicate (counted before), refused (400).",
    ["outcome"],
    registry=REGISTRY,
)
for _outcome in OUTCOMES_DELIVERY:
    OUTBOX_DELIVERIES.labels(_outcome)  # present at 0 from the start, so rate() sees the first
for _outcome in OUTCOMES_DELTA:
    DELTAS.labels(_outcome)


@dataclass(frozen=True)
class OutboxStats:
    """What the outbox holds now, as order-db's store reads it in one query."""

    pending: int
    parked: int
    oldest_pending_age_seconds: float  # 0 when nothing is pending


class _StoreCollector(Collector):
    """Gauges read from a store when Prometheus scrapes; a failing read drops its gauges from
    that scrape (the series go stale, they never show a made-up 0) and counts a store error."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outbox: Callable[[], OutboxStats] | None = None
        self._positions: dict[str, tuple[str, Callable[[], int]]] = {}
        self.role = "unknown"

    def set_outbox(self, read: Callable[[], OutboxStats]) -> None:
        with self._lock:
            self._outbox = read

    def set_position(self, name: str, doc: str, read: Callable[[], int]) -> None:
        with self._lock:
            self._positions[name] = (doc, read)

    def describe(self) -> Iterable[Metric]:
        return []  # dynamic: registered before any callback exists

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            outbox, positions = self._outbox, dict(self._positions)
        if outbox is not None:
            yield from self._read_outbox(outbox)
        for name, (doc, read) in positions.items():
            try:
                value = read()
            except Exception as exc:  # a scrape must answer even when the store is down
                self._failed(name, exc)
                continue
            yield GaugeMetricFamily(name, doc, value=value)

    def _read_outbox(self, read: Callable[[], OutboxStats]) -> Iterable[Metric]:
        try:
            stats = read()
        except Exception as exc:
            self._failed("cqrs_outbox_rows", exc)
            return
        rows = GaugeMetricFamily(
            "cqrs_outbox_rows", "order-db's outbox rows by status.", labels=["status"]
        )
        rows.add_metric(["pending"], stats.pending)
        rows.add_metric(["parked"], stats.parked)
        yield rows
        yield GaugeMetricFamily(
            "cqrs_outbox_oldest_pending_age_seconds",
            "How long the oldest pending outbox row has waited (0 when none is pending).",
            value=stats.oldest_pending_age_seconds,
        )

    def _failed(self, name: str, exc: Exception) -> None:
        STORE_ERRORS.labels(self.role).inc()
        logger.warning("metrics: could not read %s: %s", name, exc)


_STORE = _StoreCollector()
REGISTRY.register(_STORE)


def register_outbox(read: Callable[[], OutboxStats]) -> None:
    """order-db: `read` returns the outbox's counts; called at every scrape (latest wins)."""
    _STORE.set_outbox(read)


def register_orders_logged(read: Callable[[], int]) -> None:
    """order-db: the write side's position, its last sequence (orders logged)."""
    _STORE.set_position(
        "cqrs_orders_logged",
        "Orders in the write store's log (its last sequence).",
        read,
    )


def register_orders_counted(read: Callable[[], int]) -> None:
    """stats-order-db: the read side's position, the orders counted in the totals.
    Consistency lag = max(cqrs_orders_logged) - max(cqrs_orders_counted), in PromQL."""
    _STORE.set_position(
        "cqrs_orders_counted",
        "Orders counted in the read store's totals.",
        read,
    )


def set_counted_not_logged(n: int) -> None:
    """query-order: how many counted orders the order log does not hold."""
    COUNTED_NOT_LOGGED.set(n)


def count_deliveries(counts: Mapping[str, int]) -> None:
    """order-db's relay: add one pass's {"sent": n, "delayed": n, "parked": n}."""
    for outcome, n in counts.items():
        if n:
            OUTBOX_DELIVERIES.labels(outcome).inc(n)


def count_delta(outcome: str) -> None:
    """stats-order-db: one delta "applied", "duplicate" or "refused"."""
    DELTAS.labels(outcome).inc()


def count_store_error(role: str) -> None:
    """Any role: a store operation failed (where StoreUnavailableError becomes a 503)."""
    STORE_ERRORS.labels(role).inc()


def exposition() -> tuple[bytes, str]:
    """The registry in the text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE


def instrument(app: Flask, role: str, threads: int | None = None) -> None:
    """Count and time every request of `app` under `role`, and serve `GET /metrics`.

    Call once per app, after its routes may exist or not (the hooks read the matched rule at
    request time). `threads` is the role's worker thread count, for the busy-workers ratio.
    """
    _STORE.role = role
    STORE_ERRORS.labels(role)
    if threads is not None:
        WORKER_THREADS.labels(role).set(threads)
    hooks = _RequestHooks(role)
    # First of all before_request hooks: a hook that answers early (an expired deadline, a
    # refused caller) stops the later ones, and its request must still be counted.
    app.before_request_funcs.setdefault(None, []).insert(0, hooks.start)
    app.after_request(hooks.observe)
    app.teardown_request(hooks.finish)
    app.add_url_rule(METRICS_PATH, "cqrs_metrics", _metrics_view, methods=["GET"])


def _metrics_view() -> Response:
    body, content_type = exposition()
    return Response(body, content_type=content_type)


class _RequestHooks:
    """One role's request metrics: in flight, and by route, method and status when done."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.in_flight = HTTP_IN_FLIGHT.labels(role)
        # label lookups cost more than the observation: done once per (route, method, status)
        self.children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def start(self) -> None:
        g.cqrs_metrics_started = time.perf_counter()
        self.in_flight.inc()

    def observe(self, response: Response) -> Response:
        started = g.get("cqrs_metrics_started")
        if started is None:
            return response
        rule = request.url_rule
        route = rule.rule if rule is not None else UNMATCHED_ROUTE
        method = request.method if request.method in METHODS else "other"
        key = (route, method, response.status_code)
        pair = self.children.get(key)
        if pair is None:
            pair = (
                HTTP_REQUESTS.labels(self.role, route, method, str(response.status_code)),
                HTTP_DURATION.labels(self.role, route, method),
            )
            self.children[key] = pair
        pair[0].inc()
        pair[1].observe(time.perf_counter() - started)
        return response

    def finish(self, exc: BaseException | None) -> None:
        # teardown runs even when no response was made, so the gauge never drifts up
        if g.pop("cqrs_metrics_started", None) is not None:
            self.in_flight.dec()

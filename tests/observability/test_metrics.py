"""cqrs_common.metrics: what a request, the outbox and the read side add, and a real Prometheus
server scraping an instrumented app sees it through PromQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import requests
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.serving import make_server

from cqrs_common import metrics
from tests.observability.prometheus import Prometheus, binary
from tests.support import wait_for


def _app(role: str) -> Flask:
    app = Flask(role)

    @app.get("/orders/<order_id>")
    def order(order_id: str) -> str:
        return order_id

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("boom")

    metrics.instrument(app, role, threads=8)
    return app


def _samples(body: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def _get(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_requests_are_counted_by_route_not_path_and_timed() -> None:
    client = _app("t-route").test_client()
    for order_id in ("a", "b", "c"):
        assert client.get(f"/orders/{order_id}").status_code == 200
    client.get("/nowhere/1")
    client.open("/orders/a", method="BREW")
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.content_type.startswith("text/plain; version=0.0.4")
    samples = _samples(answer.data)
    route = {"role": "t-route", "route": "/orders/<order_id>", "method": "GET"}
    assert _get(samples, "cqrs_http_requests_total", **route, status="200") == 3
    assert _get(samples, "cqrs_http_request_duration_seconds_count", **route) == 3
    assert _get(samples, "cqrs_http_request_duration_seconds_bucket", **route, le="10.0") == 3
    unmatched = {"role": "t-route", "route": "<unmatched>", "method": "GET", "status": "404"}
    assert _get(samples, "cqrs_http_requests_total", **unmatched) == 1
    # a method no rule takes matches no rule either (405); its name is not a label value
    other = {"role": "t-route", "route": "<unmatched>", "method": "other", "status": "405"}
    assert _get(samples, "cqrs_http_requests_total", **other) == 1
    assert not any("/orders/a" in str(labels) for _, labels in samples)  # bounded labels
    assert _get(samples, "cqrs_worker_threads", role="t-route") == 8
    # only the scrape itself is in flight while it is answered
    assert _get(samples, "cqrs_http_requests_in_flight", role="t-route") == 1


def test_a_failing_request_is_counted_and_leaves_nothing_in_flight() -> None:
    app = _app("t-boom")
    app.config["PROPAGATE_EXCEPTIONS"] = False
    client = app.test_client()
    assert client.get("/boom").status_code == 500
    samples = _samples(client.get("/metrics").data)
    labels = {"role": "t-boom", "route": "/boom", "method": "GET", "status": "500"}
    assert _get(samples, "cqrs_http_requests_total", **labels) == 1
    assert _get(samples, "cqrs_http_requests_in_flight", role="t-boom") == 1  # the scrape only


def test_store_gauges_are_read_at_scrape_time_and_a_failing_read_drops_them() -> None:
    state = {"pending": 2, "fail": False}

    def outbox() -> metrics.OutboxStats:
        if state["fail"]:
            raise OSError("store down")
        return metrics.OutboxStats(
            pending=state["pending"], parked=1, oldest_pending_age_seconds=4.5
        )

    metrics.register_outbox(outbox)
    metrics.register_orders_logged(lambda: 7)
    metrics.register_orders_counted(lambda: 5)
    samples = _samples(metrics.exposition()[0])
    assert _get(samples, "cqrs_outbox_rows", status="pending") == 2
    assert _get(samples, "cqrs_outbox_rows", status="parked") == 1
    assert _get(samples, "cqrs_outbox_oldest_pending_age_seconds") == 4.5
    assert _get(samples, "cqrs_orders_logged") - _get(samples, "cqrs_orders_counted") == 2
    state["pending"] = 3
    assert _get(_samples(metrics.exposition()[0]), "cqrs_outbox_rows", status="pending") == 3
    state["fail"] = True
    samples = _samples(metrics.exposition()[0])
    assert ("cqrs_outbox_rows", frozenset({("status", "pending")})) not in samples
    assert _get(samples, "cqrs_orders_logged") == 7  # the other gauges still answer
    state["fail"] = False  # the registry is the process's: leave it healthy


def test_outcome_counters_start_at_zero_and_add_up() -> None:
    before = _samples(metrics.exposition()[0])
    for outcome in ("sent", "delayed", "parked"):
        assert ("cqrs_outbox_deliveries_total", frozenset({("outcome", outcome)})) in before
    metrics.count_deliveries({"sent": 3, "delayed": 1, "parked": 0})
    metrics.count_delta("duplicate")
    metrics.count_store_error("t-store")
    after = _samples(metrics.exposition()[0])

    def grew(name: str, **labels: str) -> float:
        return _get(after, name, **labels) - _get(before, name, **labels)

    assert grew("cqrs_outbox_deliveries_total", outcome="sent") == 3
    assert grew("cqrs_outbox_deliveries_total", outcome="delayed") == 1
    assert grew("cqrs_outbox_deliveries_total", outcome="parked") == 0
    assert grew("cqrs_deltas_total", outcome="duplicate") == 1
    assert grew("cqrs_store_errors_total", role="t-store") == 1


# -- a real Prometheus server ------------------------------------------------------------------


@pytest.fixture
def served() -> Iterator[str]:
    server = make_server("127.0.0.1", 0, _app("t-scraped"), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.mark.slow
@pytest.mark.skipif(
    binary() is None, reason="prometheus not installed (apt-get install prometheus)"
)
def test_a_real_prometheus_sees_the_requests_through_promql(served: str) -> None:
    with Prometheus({"shop": [served]}) as prom:
        wait_for(lambda: prom.targets_up().get(served) == "up" or None, timeout=30)
        for order_id in range(5):
            requests.get(f"http://{served}/orders/{order_id}", timeout=5).raise_for_status()
        query = (
            'sum(cqrs_http_requests_total{job="shop",role="t-scraped",'
            'route="/orders/<order_id>",status="200"})'
        )
        assert wait_for(lambda: prom.value(query) == 5 or None, timeout=30)
        # the check can fail: a route nobody called has no series at all
        assert prom.query('cqrs_http_requests_total{role="t-scraped",route="/boom"}') == []
        with pytest.raises(ValueError, match="parse error"):
            prom.query("sum(")

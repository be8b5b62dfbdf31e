"""The whole shop under gunicorn, seen from outside: a real Prometheus scrapes every role and
sees the orders a test placed; an OTLP receiver gets one trace per order across the roles and
across the outbox; and each role's log lines carry that trace's id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from tests.conftest import start_stack
from tests.observability.otlp_receiver import OtlpReceiver
from tests.observability.prometheus import Prometheus, binary
from tests.support import wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(binary() is None, reason="needs prometheus (make test-deps installs it)"),
]
ORDER = {"product": "pear", "quantity": 2, "unitPrice": "0.35"}
# The roles one order passes through, in the order of the contract's chain.
ORDER_PATH = ("cqrs-dispatcher", "cqrs-command-order", "cqrs-order-db", "cqrs-process-data",
              "cqrs-stats-order-db")  # fmt: skip
SERVER, CLIENT, PRODUCER = 2, 3, 4  # OTLP span kinds


def test_prometheus_scrapes_every_role_and_counts_the_orders_placed(tmp_path: Path) -> None:
    stack = start_stack(tmp_path / "stack")
    targets = [stack.url(role).removeprefix("http://") for role in stack.ports]
    try:
        with Prometheus({"shop": targets}) as prometheus:
            wait_for(lambda: set(prometheus.targets_up().values()) == {"up"}, timeout=30)
            base = stack.url("dispatcher")
            for _ in range(5):
                response = requests.post(f"{base}/api/orders", json=ORDER, timeout=10)
                assert response.status_code == 202
            wait_for(lambda: requests.get(f"{base}/api/stats", timeout=5).json()[
                "ordersCounted"] == 5)  # fmt: skip
            accepted = (
                'sum(cqrs_http_requests_total{role="dispatcher",route="/api/orders",status="202"})'
            )
            assert wait_for(lambda: prometheus.value(accepted) == 5, timeout=30)
            # Both sides' positions, and the lag between them, as the dashboard computes it.
            # Each role is scraped on its own beat: every series gets there, each in its time.
            for query, value in (
                ("max(cqrs_orders_counted)", 5),
                ("max(cqrs_orders_logged) - max(cqrs_orders_counted)", 0),
                ('sum(cqrs_deltas_total{outcome="applied"})', 5),
                ('sum(cqrs_outbox_deliveries_total{outcome="sent"})', 5),
                ('sum(cqrs_outbox_rows{status="pending"})', 0),
            ):
                wait_for(lambda q=query, v=value: prometheus.value(q) == v, timeout=30)
    finally:
        stack.stop()


def test_one_order_is_one_trace_across_five_roles_and_the_outbox(tmp_path: Path) -> None:
    with OtlpReceiver() as receiver:
        otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        stack = start_stack(tmp_path / "stack", extra_env=otel)
        try:
            base = stack.url("dispatcher")
            placed = requests.post(f"{base}/api/orders", json=ORDER, timeout=10)
            assert placed.status_code == 202
            order_id = placed.json()["orderId"]
            wait_for(lambda: requests.get(f"{base}/api/orders/{order_id}", timeout=5).json()[
                "status"] == "counted")  # fmt: skip

            def is_root(s) -> bool:  # the dispatcher's POST /api/orders, started by no one
                return (s.service == "cqrs-dispatcher" and s.kind == SERVER
                        and not s.parent_span_id and s.name.startswith("POST"))  # fmt: skip

            (root,) = [s for s in receiver.wait_for(lambda spans: any(map(is_root, spans)))
                       if is_root(s)]  # fmt: skip
            # The five roles in the order's trace, as one tree: every span but the root has its
            # parent in it (spans come in batches, each role's in its own: wait for all).
            spans = receiver.wait_for(lambda spans: _one_tree(spans, root), timeout=30)
            trace = [s for s in spans if s.trace_id == root.trace_id]
            by_id = {s.span_id: s for s in trace}
            # The outbox hop: order-db's relay sends from its own thread, after the request that
            # stored the order was answered; its span continues the context stored with the row,
            # the span of the request that stored the order.
            (send,) = [s for s in trace if s.service == "cqrs-order-db" and s.kind == PRODUCER]
            received = [s for s in trace if s.service == "cqrs-process-data" and s.kind == SERVER]
            assert received and all(_descends(s, send, by_id) for s in received)
            stored = [s for s in trace if s.service == "cqrs-order-db" and s.kind == SERVER]
            assert [send.parent_span_id] == [s.span_id for s in stored]
            log = tmp_path / "stack" / "logs" / "stats-order-db.log"
            lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
            assert any(x.get("trace_id") == root.trace_id and x.get("path") == "/" for x in lines)
        finally:
            stack.stop()


def _one_tree(spans, root) -> bool:
    trace = [s for s in spans if s.trace_id == root.trace_id]
    ids = {s.span_id for s in trace}
    return set(ORDER_PATH) <= {s.service for s in trace} and all(
        s.parent_span_id in ids for s in trace if s.span_id != root.span_id
    )


def _descends(span, ancestor, by_id) -> bool:
    while span.parent_span_id:
        span = by_id[span.parent_span_id]
        if span.span_id == ancestor.span_id:
            return True
    return False

"""A read side that has counted more than the order log holds says so: never "up to date"."""

from __future__ import annotations

from typing import Any

from cqrs_common import metrics
from query_order import _pipeline


class Position:
    """order-db's GET /position, as query-order's client reads it."""

    def __init__(self, logged: int) -> None:
        self.logged = logged

    def get_json(self, url: str, **kwargs: Any) -> Any:
        return {"ordersLogged": self.logged, "outbox": {"parked": 0}}


def gauge() -> float:
    return metrics.REGISTRY.get_sample_value("cqrs_orders_counted_not_logged") or 0.0


def test_totals_counting_orders_the_log_lost_are_reported_and_measured() -> None:
    # The write store lost 20 acknowledged orders (its file deleted, an old backup restored).
    pipeline = _pipeline(Position(logged=80), "http://order-db", counted=100)
    assert pipeline is not None
    assert pipeline["countedNotLogged"] == 20
    assert gauge() == 20
    healthy = _pipeline(Position(logged=100), "http://order-db", counted=90)
    assert healthy == {"ordersLogged": 100, "behind": 10, "stuck": 0}
    assert gauge() == 0

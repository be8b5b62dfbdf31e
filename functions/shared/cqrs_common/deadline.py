"""Request budgets: how long the caller will wait, passed on to each hop with a little less.

A request arrives with `X-Request-Timeout-Ms` (the milliseconds its caller still waits, as gRPC's
`grpc-timeout`), or with nothing, when it gets the role's own budget (REQUEST_TIMEOUT, 30 s: the
Knative Services' timeoutSeconds). Each outbound call is given what is left minus a reserve for
answering, so every hop gives up before its caller does and no work outlives the one waiting for
it. An Istio sidecar's `x-envoy-expected-rq-timeout-ms` bounds the budget too when present.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

BUDGET_HEADER = "X-Request-Timeout-Ms"
ENVOY_HEADER = "x-envoy-expected-rq-timeout-ms"
# What a hop keeps for itself out of its budget: the time to turn an answer (or a timeout) into
# its own answer. A tenth, and at least 50 ms.
RESERVE_SHARE = 0.1
RESERVE_MIN = 0.05
# Less than this left: not worth a call, the answer could not come back in time.
MIN_CALL = 0.05


class Deadline:
    """A point in time (monotonic clock) by which the current request must be answered."""

    __slots__ = ("at",)

    def __init__(self, at: float) -> None:
        self.at = at

    @classmethod
    def after(cls, seconds: float, start: float | None = None) -> Deadline:
        return cls((time.monotonic() if start is None else start) + seconds)

    @classmethod
    def from_headers(
        cls, headers: Mapping[str, str], default: float, start: float | None = None
    ) -> Deadline:
        """The request's deadline: the caller's budget if it sent one, never above `default`."""
        budget = default
        for name in (BUDGET_HEADER, ENVOY_HEADER):
            millis = parse_millis(headers.get(name))
            if millis is not None:
                budget = min(budget, millis / 1000)
        return cls.after(budget, start)

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def for_call(self) -> float:
        """Seconds the next hop may take: what is left, less this hop's reserve (may be <= 0)."""
        left = self.remaining()
        return left - max(RESERVE_MIN, left * RESERVE_SHARE)


def parse_millis(value: str | None) -> int | None:
    """A header's whole number of milliseconds, or None when absent or malformed (ignored)."""
    if value is None:
        return None
    value = value.strip()
    # At most 9 digits (11 days): no caller waits longer, and no huge int reaches arithmetic.
    if not value.isascii() or not value.isdigit() or len(value) > 9:
        return None
    return int(value)

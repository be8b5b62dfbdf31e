"""Request budgets: how long the caller will wait, passed on to each hop with a little less.

A request arrives with `X-Request-Timeout-Ms` (the milliseconds its caller still waits, as gRPC's
`grpc-timeout`), or with nothing, when it gets the role's own budget (REQUEST_TIMEOUT, 30 s: the
Knative Services' timeoutSeconds). Each outbound call is given what is left minus a reserve for
answering, so every hop gives up before its caller does and no work outlives the one waiting for
it. An Istio sidecar's `x-envoy-expected-rq-timeout-ms` bounds the budget too when present.

A relative budget counts from when the request reached this role, which can be long after it was
sent: a stopped or stalled pod still accepts connections into its backlog, and serves them when it
resumes, after its callers have given up. So each call also carries the moment its caller stops
waiting, `X-Request-Deadline` (Unix time in milliseconds, as Finagle's deadline context carries an
absolute time), and a request that arrives past it is refused before anything is done. Clocks of
a cluster's nodes are kept in step (NTP); CLOCK_SKEW allows for what they still differ by.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

BUDGET_HEADER = "X-Request-Timeout-Ms"
DEADLINE_HEADER = "X-Request-Deadline"
ENVOY_HEADER = "x-envoy-expected-rq-timeout-ms"
# What a hop keeps for itself out of its budget: the time to turn an answer (or a timeout) into
# its own answer. A tenth, and at least 50 ms.
RESERVE_SHARE = 0.1
RESERVE_MIN = 0.05
# Less than this left: not worth a call, the answer could not come back in time.
MIN_CALL = 0.05
# How far apart two nodes' clocks may be before an absolute deadline is misread as passed.
CLOCK_SKEW = 1.0


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
        """The request's deadline: the caller's budget if it sent one, never above `default`,
        and never past the moment the caller stops waiting (DEADLINE_HEADER)."""
        budget = default
        for name in (BUDGET_HEADER, ENVOY_HEADER):
            millis = parse_millis(headers.get(name))
            if millis is not None:
                budget = min(budget, millis / 1000)
        deadline = cls.after(budget, start)
        caller_gives_up = parse_epoch_millis(headers.get(DEADLINE_HEADER))
        if caller_gives_up is not None:
            left = caller_gives_up / 1000 + CLOCK_SKEW - time.time()
            deadline.at = min(deadline.at, time.monotonic() + left)
        return deadline

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def for_call(self) -> float:
        """Seconds the next hop may take: what is left, less this hop's reserve (may be <= 0)."""
        left = self.remaining()
        return left - max(RESERVE_MIN, left * RESERVE_SHARE)


def outbound_headers(budget: float) -> dict[str, str]:
    """The headers that give one outbound try `budget` seconds: how long, and until when."""
    return {
        BUDGET_HEADER: str(int(budget * 1000)),
        DEADLINE_HEADER: str(int((time.time() + budget) * 1000)),
    }


def parse_epoch_millis(value: str | None) -> int | None:
    """A Unix time in whole milliseconds, or None when absent or malformed (ignored)."""
    return _whole_number(value, 15)


def parse_millis(value: str | None) -> int | None:
    """A header's whole number of milliseconds, or None when absent or malformed (ignored).
    At most 9 digits (11 days): no caller waits longer, and no huge int reaches arithmetic."""
    return _whole_number(value, 9)


def _whole_number(value: str | None, max_digits: int) -> int | None:
    if value is None:
        return None
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > max_digits:
        return None
    return int(value)

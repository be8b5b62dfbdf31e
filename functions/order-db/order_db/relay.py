"""Relays the outbox to K_SINK: at least once, with bounded exponential backoff; parks refusals."""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from cloudevents.core.base import BaseCloudEvent

from cqrs_common import events, metrics, tracing
from cqrs_common.client import UpstreamError
from cqrs_common.cloudevents_io import Outcome, Publisher, RejectedEventError, new_event
from cqrs_common.db import StoreUnavailableError
from cqrs_common.lifecycle import DRAINING
from cqrs_common.limits import WORKER_THREADS
from cqrs_common.roles import ORDER_DB, SINK_BATCH
from order_db.store import OrderStore, OutboxRow

logger = logging.getLogger(__name__)

LEASE_SECONDS = 30.0
# Deliveries in flight at once: as many as a receiver takes (its containerConcurrency).
SENDERS = WORKER_THREADS
MAX_ATTEMPTS = 50  # with a 60 s ceiling, about 45 minutes of trying before a row is parked


def backoff(attempts: int, base: float, ceiling: float) -> float:
    """Delay before attempt `attempts + 1`: exponential, capped, with jitter so relays spread."""
    delay = min(ceiling, base * (2**attempts))
    return delay * random.uniform(0.5, 1.0)


class OutboxRelay:
    def __init__(
        self,
        store: OrderStore,
        publisher: Publisher,
        base_delay: float,
        max_delay: float,
        poll_interval: float,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.poll_interval = poll_interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(SENDERS, thread_name_prefix="outbox-send")
        self._claims: set[str] = set()  # tokens of the batches being sent right now
        # Claims carry the pod's name: a restarted container keeps it, another replica does not
        # (sibling workers share it: at worst one batch is sent twice, which receivers ignore).
        self.owner = socket.gethostname()

    def wake(self) -> None:
        self._wake.set()

    def relay_due(self) -> dict[str, int]:
        """Send every row that is due now; returns how many were sent, delayed and parked."""
        counts = {"sent": 0, "delayed": 0, "parked": 0}
        while not DRAINING.is_set():  # a stopping process claims nothing new
            token = f"{self.owner}/{uuid.uuid4().hex}"
            self._claims.add(token)
            rows = self.store.claim_due(SINK_BATCH, LEASE_SECONDS, token)
            outcomes = self._deliver_all(rows)
            sent = [row.id for row, error in zip(rows, outcomes, strict=True) if error is None]
            self.store.mark_sent(sent)
            counts["sent"] += len(sent)
            for row, error in zip(rows, outcomes, strict=True):
                if error is not None:
                    counts[self._record_failure(row, error)] += 1
            self._claims.discard(token)
            if len(rows) < SINK_BATCH:
                break
        metrics.count_deliveries(counts)
        return counts

    def _deliver_all(self, rows: list[OutboxRow]) -> list[Outcome]:
        """Each row's outcome, in order. Deliveries go out side by side, a batch per request
        when the sink takes them; the receivers are idempotent and order-free."""
        size = self.publisher.batch_size
        if size <= 1 or len(rows) <= 1:
            return list(self._pool.map(self._deliver, rows))
        chunks = [rows[i : i + size] for i in range(0, len(rows), size)]
        sent = self._pool.map(self._deliver_batch, chunks)
        return [outcome for chunk_outcomes in sent for outcome in chunk_outcomes]

    def _deliver(self, row: OutboxRow) -> Outcome:
        """Send one row's event; it carries the order's trace (the row's), and the send is a
        span of that trace even from the relay's own thread."""
        with tracing.continue_from_event(row.trace, f"send {row.event_type}"):
            try:
                self.publisher(_event(row))
            except (RejectedEventError, UpstreamError) as exc:
                return exc
        return None

    def _deliver_batch(self, rows: list[OutboxRow]) -> list[Outcome]:
        """Send rows' events in one request: one span, linked to each order's trace."""
        with tracing.batch_span([row.trace for row in rows], f"send {len(rows)} events"):
            return self.publisher.send_all([_event(row) for row in rows])

    def _record_failure(self, row: OutboxRow, error: Exception) -> str:
        fields = {"ce_id": row.event_id, "ce_type": row.event_type, "subject": row.subject,
                  "outbox_id": row.id, "attempts": row.attempts + 1}  # fmt: skip
        if isinstance(error, UpstreamError) and row.attempts + 1 < MAX_ATTEMPTS:
            delay = backoff(row.attempts, self.base_delay, self.max_delay)
            self.store.mark_failed(row.id, str(error), time.time() + delay)
            logger.warning("delivery failed, next try in %.1fs: %s", delay, error, extra=fields)
            return "delayed"
        reason = str(error)
        if isinstance(error, UpstreamError):
            reason = f"gave up after {row.attempts + 1} attempts: {error}"
        self.store.park(row.id, reason)
        logger.error("outbox row parked: %s", reason, extra={**fields, "reason": reason})
        return "parked"

    # -- background loop ---------------------------------------------------------------------

    def start(self) -> None:
        """Relay in the background, starting with what a killed predecessor in this pod held."""
        try:
            released = self.store.release_owner(self.owner)
        except StoreUnavailableError as exc:
            logger.warning("outbox: earlier claims not handed back: %s", exc)
        else:
            if released:
                logger.info("outbox: %s rows claimed before a restart are due again", released)
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def release(self) -> None:
        """At exit (cqrs_common.lifecycle): let the batch in hand finish, then hand back whatever
        is still claimed, or it would wait out its lease."""
        self.stop()
        if not self._claims:
            return
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        for token in list(self._claims):
            with contextlib.suppress(Exception):  # the store may be gone too; the lease remains
                released = self.store.release(token)
                logger.info("outbox: %s claimed rows handed back at exit", released)
            self._claims.discard(token)

    def _run(self) -> None:
        while not self._stop.is_set() and not DRAINING.is_set():
            try:
                self.relay_due()
            except StoreUnavailableError as exc:
                logger.warning("outbox relay paused: %s", exc)
            except Exception:  # the loop must survive anything, or the outbox stalls silently
                logger.exception("outbox relay pass failed")
            self._wake.wait(self.poll_interval)
            self._wake.clear()


def _event(row: OutboxRow) -> BaseCloudEvent:
    """A row's event, with the id it was stored with (a redelivery keeps it) and its trace."""
    return new_event(
        row.event_type, events.source(ORDER_DB.name), row.subject, row.data, row.event_id,
        extensions=row.trace,
    )  # fmt: skip

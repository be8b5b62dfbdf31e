"""The write store: the order log and its transactional outbox."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from cqrs_common import events
from cqrs_common.db import AddColumn, Database
from cqrs_common.domain import ConflictError, Order, now_iso
from cqrs_common.metrics import OutboxStats

# Each table once; the column types that differ between the two dialects are filled in.
_TYPES = {
    "sqlite": {
        "serial": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "money": "TEXT",  # exact decimal text; SQLite's NUMERIC would round through a float
        "seconds": "REAL",
    },
    "postgresql": {
        "serial": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "money": "NUMERIC(14, 2)",
        "seconds": "DOUBLE PRECISION",
    },
}
_TABLES = (
    """CREATE TABLE IF NOT EXISTS orders (
        sequence {serial},
        order_id TEXT NOT NULL UNIQUE,
        product TEXT NOT NULL,
        quantity INTEGER NOT NULL,
        unit_price {money} NOT NULL,
        placed_at TEXT NOT NULL,
        recorded_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS outbox (
        id {serial},
        event_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        subject TEXT NOT NULL,
        payload TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at {seconds} NOT NULL,
        claim TEXT,
        last_error TEXT,
        created_at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, next_attempt_at)",
)
# The order's trace context (CloudEvents Distributed Tracing: traceparent, tracestate as JSON),
# so its relayed event continues the order's trace; added after the first release.
_TRACE_COLUMN = AddColumn("outbox", "trace_context", "TEXT")
SCHEMA: dict[str, list[str | AddColumn]] = {
    dialect: [*(t.format(**types) for t in _TABLES), _TRACE_COLUMN]
    for dialect, types in _TYPES.items()
}

PENDING, PARKED = "pending", "parked"
INSERT_ORDER = """
    INSERT INTO orders (order_id, product, quantity, unit_price, placed_at, recorded_at)
    VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (order_id) DO NOTHING RETURNING sequence"""
_ORDER_COLUMNS = "sequence, order_id, product, quantity, unit_price, placed_at"


@dataclass(frozen=True)
class OutboxRow:
    id: int
    event_id: str
    event_type: str
    subject: str
    data: dict[str, Any]
    attempts: int
    trace: dict[str, str] = field(default_factory=dict)  # the event's tracing extensions


def _existing(tx: Any, order: Order) -> int | None:
    """The sequence of the order already stored under this id, if any; ConflictError if that one
    is another order (its placedAt may differ: a retried request is placed again)."""
    row = tx.execute(
        "SELECT sequence, product, quantity, unit_price FROM orders WHERE order_id = ?",
        (order.order_id,),
    ).fetchone()
    if row is None:
        return None
    sequence, product, quantity, unit_price = row
    if (product, int(quantity), Decimal(str(unit_price))) != (
        order.product, order.quantity, order.unit_price,
    ):  # fmt: skip
        raise ConflictError(
            f"order {order.order_id} was placed with another product, quantity or price: "
            "an Idempotency-Key names one order"
        )
    return int(sequence)


def _order(row: tuple[Any, ...]) -> tuple[Order, int]:
    sequence, order_id, product, quantity, unit_price, placed_at = row
    return Order(order_id, product, int(quantity), Decimal(str(unit_price)), placed_at), int(
        sequence
    )


class OrderStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, order: Order, trace: Mapping[str, str] | None = None) -> tuple[int, bool]:
        """Append the order and its `order.recorded` outbox row in one transaction.

        Returns (sequence, created); an order id seen before changes nothing (created False),
        and raises ConflictError if it was stored with another product, quantity or price.
        """
        with self.db.transaction() as tx:
            # Look first: a duplicate then costs no sequence number (a failed INSERT would).
            existing = _existing(tx, order)
            if existing is not None:
                return existing, False
            row = tx.execute(
                INSERT_ORDER,
                (
                    order.order_id,
                    order.product,
                    order.quantity,
                    str(order.unit_price),
                    order.placed_at,
                    now_iso(),
                ),
            ).fetchone()
            if row is None:  # a concurrent writer on PostgreSQL stored it between our two steps
                existing = _existing(tx, order)
                assert existing is not None  # ON CONFLICT did nothing: the row is there
                return existing, False
            sequence = int(row[0])
            tx.execute(
                "INSERT INTO outbox (event_id, event_type, subject, payload, next_attempt_at,"
                " created_at, trace_context) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    str(uuid.uuid4()),
                    events.ORDER_RECORDED,
                    order.order_id,
                    json.dumps(events.recorded_to_data(order, sequence)),
                    0.0,
                    now_iso(),
                    json.dumps(dict(trace)) if trace else None,
                ),
            )
            return sequence, True

    def get(self, order_id: str) -> tuple[Order, int] | None:
        with self.db.read() as tx:
            row = tx.execute(
                f"SELECT {_ORDER_COLUMNS} FROM orders WHERE order_id = ?", (order_id,)
            ).fetchone()
        return _order(row) if row else None

    def page(self, after: int, limit: int) -> list[tuple[Order, int]]:
        """Orders in log order after `after` (a sequence), for replay."""
        with self.db.read() as tx:
            rows = tx.execute(
                f"SELECT {_ORDER_COLUMNS} FROM orders WHERE sequence > ? ORDER BY sequence LIMIT ?",
                (after, limit),
            ).fetchall()
        return [_order(row) for row in rows]

    def count(self) -> int:
        with self.db.read() as tx:
            return int(tx.execute("SELECT COUNT(*) FROM orders").fetchone()[0])

    # -- outbox ------------------------------------------------------------------------------

    def claim_due(self, limit: int, lease_seconds: float, token: str | None = None
                  ) -> list[OutboxRow]:  # fmt: skip
        """Take up to `limit` due rows for this relay; another relay sees them only after the lease.

        The outer `next_attempt_at <= now` is re-checked on a row another transaction just
        claimed (PostgreSQL re-evaluates it on the newest version), so no row is claimed twice.
        """
        now = time.time()
        token = token or uuid.uuid4().hex
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE outbox SET claim = ?, next_attempt_at = ?"
                " WHERE status = 'pending' AND next_attempt_at <= ? AND id IN ("
                "  SELECT id FROM outbox WHERE status = 'pending' AND next_attempt_at <= ?"
                "  ORDER BY id LIMIT ?)",
                (token, now + lease_seconds, now, now, limit),
            )
            rows = tx.execute(
                "SELECT id, event_id, event_type, subject, payload, attempts, trace_context"
                " FROM outbox WHERE claim = ? AND status = 'pending' ORDER BY id",
                (token,),
            ).fetchall()
        return [
            OutboxRow(int(r[0]), r[1], r[2], r[3], json.loads(r[4]), int(r[5]),
                      json.loads(r[6]) if r[6] else {})
            for r in rows
        ]  # fmt: skip

    def release(self, token: str) -> int:
        """Make rows still held under `token` due now (their relay is stopping, not sending)."""
        return self._release("claim = ?", (token,))

    def release_owner(self, owner: str) -> int:
        """Make every row claimed by `owner`'s relays due now (an earlier process of the same
        pod, killed mid-batch: its claims would otherwise wait out their lease)."""
        prefix = f"{owner}/"
        return self._release("substr(claim, 1, ?) = ?", (len(prefix), prefix))

    def _release(self, claimed: str, params: tuple[Any, ...]) -> int:
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE outbox SET claim = NULL, next_attempt_at = 0"
                f" WHERE status = 'pending' AND {claimed}",
                params,
            )
            return tx.rowcount

    def mark_sent(self, row_ids: list[int]) -> None:
        """Forget delivered rows: the order log is the record, a sent row has done its job."""
        if not row_ids:
            return
        with self.db.transaction() as tx:
            marks = ", ".join("?" * len(row_ids))
            tx.execute(f"DELETE FROM outbox WHERE id IN ({marks})", row_ids)

    def mark_failed(self, row_id: int, error: str, retry_at: float) -> None:
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?,"
                " claim = NULL WHERE id = ?",
                (retry_at, error[:500], row_id),
            )

    def park(self, row_id: int, reason: str) -> None:
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE outbox SET status = 'parked', attempts = attempts + 1, last_error = ?,"
                " claim = NULL WHERE id = ?",
                (reason[:500], row_id),
            )

    def retry(self, row_id: int) -> bool:
        """Put a parked row back in the queue (by hand, once its cause is fixed)."""
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = 0,"
                " claim = NULL WHERE id = ? AND status = 'parked'",
                (row_id,),
            )
            return tx.rowcount == 1

    def outbox(self, status: str, limit: int = 100) -> list[dict[str, Any]]:
        with self.db.read() as tx:
            rows = tx.execute(
                "SELECT id, event_id, event_type, subject, attempts, next_attempt_at, last_error,"
                " created_at FROM outbox WHERE status = ? ORDER BY id LIMIT ?",
                (status, limit),
            ).fetchall()
        return [
            {
                "id": int(r[0]),
                "eventId": r[1],
                "type": r[2],
                "subject": r[3],
                "attempts": int(r[4]),
                "nextAttemptAt": float(r[5]),
                "lastError": r[6],
                "createdAt": r[7],
                "status": status,
            }
            for r in rows
        ]

    def outbox_stats(self) -> OutboxStats:
        """How many rows wait and are parked, and how long the oldest waiting one has (a scrape
        of /metrics reads this: one query)."""
        with self.db.read() as tx:
            rows = tx.execute(
                "SELECT status, COUNT(*), MIN(created_at) FROM outbox GROUP BY status"
            ).fetchall()
        counts = {r[0]: (int(r[1]), r[2]) for r in rows}
        pending, oldest = counts.get(PENDING, (0, None))
        age = 0.0
        if oldest:
            age = max(0.0, time.time() - datetime.fromisoformat(oldest).timestamp())
        return OutboxStats(pending, counts.get(PARKED, (0, None))[0], age)

    def outbox_counts(self) -> dict[str, int]:
        with self.db.read() as tx:
            rows = tx.execute("SELECT status, COUNT(*) FROM outbox GROUP BY status").fetchall()
        return {PENDING: 0, PARKED: 0, **{r[0]: int(r[1]) for r in rows}}

"""The read store: per-product totals, and the order ids already counted in them."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from cqrs_common.db import Database, Transaction
from cqrs_common.domain import PRODUCTS, StatsDelta, now_iso

_SEED = [
    f"INSERT INTO product_totals (product, quantity, total_price, orders)"
    f" VALUES ('{product}', 0, '0.00', 0) ON CONFLICT (product) DO NOTHING"
    for product in PRODUCTS
]
SCHEMA = {
    "sqlite": [
        # Money as exact decimal text; SQLite's NUMERIC would round through a binary float.
        """CREATE TABLE IF NOT EXISTS applied_orders (
            order_id TEXT PRIMARY KEY,
            product TEXT NOT NULL,
            quantity INTEGER NOT NULL,
            amount TEXT NOT NULL,
            applied_at TEXT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS product_totals (
            product TEXT PRIMARY KEY,
            quantity INTEGER NOT NULL,
            total_price TEXT NOT NULL,
            orders INTEGER NOT NULL,
            updated_at TEXT)""",
        *_SEED,
    ],
    "postgresql": [
        """CREATE TABLE IF NOT EXISTS applied_orders (
            order_id TEXT PRIMARY KEY,
            product TEXT NOT NULL,
            quantity INTEGER NOT NULL,
            amount NUMERIC(20, 2) NOT NULL,
            applied_at TEXT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS product_totals (
            product TEXT PRIMARY KEY,
            quantity BIGINT NOT NULL,
            total_price NUMERIC(38, 2) NOT NULL,
            orders BIGINT NOT NULL,
            updated_at TEXT)""",
        *_SEED,
    ],
}


def _add_to_totals(
    tx: Transaction, product: str, quantity: int, amount: Decimal, orders: int, now: str
) -> None:
    if tx.dialect == "postgresql":
        tx.execute(
            "UPDATE product_totals SET quantity = quantity + ?,"
            " total_price = total_price + ?::numeric, orders = orders + ?, updated_at = ?"
            " WHERE product = ?",
            (quantity, str(amount), orders, now, product),
        )
        return
    # BEGIN IMMEDIATE holds SQLite's write lock, so read-modify-write is safe here; the sum is
    # done in Python because SQLite's arithmetic on the text would go through a binary float.
    current_quantity, total = tx.execute(
        "SELECT quantity, total_price FROM product_totals WHERE product = ?", (product,)
    ).fetchone()
    tx.execute(
        "UPDATE product_totals SET quantity = ?, total_price = ?, orders = orders + ?,"
        " updated_at = ? WHERE product = ?",
        (int(current_quantity) + quantity, str(Decimal(total) + amount), orders, now, product),
    )


class StatsStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def apply(self, delta: StatsDelta) -> bool:
        """Add the delta to its product's totals unless this order was counted already."""
        return self.apply_all([delta])[0]

    def apply_all(self, deltas: Sequence[StatsDelta]) -> list[bool]:
        """Each delta added unless its order was counted already (before, or earlier in these):
        whether it was, in order. The applied order ids and the totals change in one
        transaction: exactly once, and one commit for a whole batch."""
        now = now_iso()
        applied: list[bool] = []
        added: dict[str, tuple[int, Decimal, int]] = {}  # product: quantity, amount, orders
        with self.db.transaction() as tx:
            for delta in deltas:
                tx.execute(
                    "INSERT INTO applied_orders (order_id, product, quantity, amount, applied_at)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (order_id) DO NOTHING",
                    (delta.order_id, delta.product, delta.quantity, str(delta.amount), now),
                )
                applied.append(tx.rowcount == 1)
                if applied[-1]:
                    quantity, amount, orders = added.get(delta.product, (0, Decimal(0), 0))
                    added[delta.product] = (
                        quantity + delta.quantity,
                        amount + delta.amount,
                        orders + 1,
                    )
            for product, (quantity, amount, orders) in sorted(added.items()):
                _add_to_totals(tx, product, quantity, amount, orders, now)
        return applied

    def count(self) -> int:
        """How many orders the totals count: the read side's position against the write log."""
        with self.db.read() as tx:
            (counted,) = tx.execute(
                "SELECT COALESCE(SUM(orders), 0) FROM product_totals"
            ).fetchone()
        return int(counted)

    def is_applied(self, order_id: str) -> bool:
        with self.db.read() as tx:
            row = tx.execute(
                "SELECT 1 FROM applied_orders WHERE order_id = ?", (order_id,)
            ).fetchone()
        return row is not None

    def totals(self) -> dict[str, Any]:
        """The merchant's view, money as decimal strings."""
        with self.db.read() as tx:
            rows = tx.execute(
                "SELECT product, quantity, total_price, orders, updated_at FROM product_totals"
            ).fetchall()
        products = {
            product: {
                "quantity": int(qty),
                "totalPrice": str(Decimal(str(total)).quantize(Decimal("0.01"))),
            }
            for product, qty, total, _, _ in rows
        }
        stamps = [r[4] for r in rows if r[4]]
        return {
            "products": {p: products[p] for p in PRODUCTS},
            "ordersCounted": sum(int(r[3]) for r in rows),
            "updatedAt": max(stamps) if stamps else None,
        }

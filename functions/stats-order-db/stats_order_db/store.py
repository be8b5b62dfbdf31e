"""The read store: per-product totals, and the order ids already counted in them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from cqrs_common.db import Database
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


class StatsStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def apply(self, delta: StatsDelta) -> bool:
        """Add the delta to its product's totals unless this order was counted already.

        The applied order id and the totals change in one transaction: exactly once.
        """
        now = now_iso()
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO applied_orders (order_id, product, quantity, amount, applied_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (order_id) DO NOTHING",
                (delta.order_id, delta.product, delta.quantity, str(delta.amount), now),
            )
            if tx.rowcount != 1:
                return False
            if tx.dialect == "postgresql":
                tx.execute(
                    "UPDATE product_totals SET quantity = quantity + ?,"
                    " total_price = total_price + ?::numeric, orders = orders + 1, updated_at = ?"
                    " WHERE product = ?",
                    (delta.quantity, str(delta.amount), now, delta.product),
                )
            else:
                # BEGIN IMMEDIATE holds SQLite's write lock, so read-modify-write is safe here.
                quantity, total = tx.execute(
                    "SELECT quantity, total_price FROM product_totals WHERE product = ?",
                    (delta.product,),
                ).fetchone()
                tx.execute(
                    "UPDATE product_totals SET quantity = ?, total_price = ?,"
                    " orders = orders + 1, updated_at = ? WHERE product = ?",
                    (
                        int(quantity) + delta.quantity,
                        str(Decimal(total) + delta.amount),
                        now,
                        delta.product,
                    ),
                )
            return True

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

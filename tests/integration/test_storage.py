"""The two stores, written once and run against SQLite and a real PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from cqrs_common.db import PG_POOL_SIZE, Database, StoreUnavailableError
from cqrs_common.domain import Order, StatsDelta, order_amount
from order_db.store import SCHEMA as ORDER_SCHEMA
from order_db.store import OrderStore
from stats_order_db.store import SCHEMA as STATS_SCHEMA
from stats_order_db.store import StatsStore


def order(n: int, product: str = "apple", quantity: int = 1, price: str = "0.10") -> Order:
    return Order(f"o-{n}", product, quantity, Decimal(price), "2026-11-26T06:00:00.000Z")


def delta(n: int, product: str = "apple", quantity: int = 1, price: str = "0.10") -> StatsDelta:
    """The delta of order(n) with these values: its amount is quantity x price, as always."""
    unit_price = Decimal(price)
    return StatsDelta(f"o-{n}", product, quantity, unit_price, order_amount(quantity, unit_price))


@pytest.fixture
def orders(database_url: str) -> OrderStore:
    return OrderStore(Database(database_url, ORDER_SCHEMA))


@pytest.fixture
def stats(database_url: str) -> StatsStore:
    return StatsStore(Database(database_url, STATS_SCHEMA))


def test_schema_creation_is_idempotent_and_keeps_what_is_stored(database_url: str) -> None:
    orders = OrderStore(Database(database_url, ORDER_SCHEMA))
    stats = StatsStore(Database(database_url, STATS_SCHEMA))
    orders.record(order(1))
    stats.apply(delta(1, quantity=2, price="0.35"))
    for _ in range(2):  # a restart runs the schema again, on a store that has it
        Database(database_url, ORDER_SCHEMA).ensure_schema()
        Database(database_url, STATS_SCHEMA).ensure_schema()
    assert orders.count() == 1 and orders.outbox_counts()["pending"] == 1
    assert stats.totals()["products"]["apple"] == {"quantity": 2, "totalPrice": "0.70"}
    assert stats.totals()["ordersCounted"] == 1


def test_an_order_and_its_outbox_row_are_stored_together_once(orders: OrderStore) -> None:
    assert orders.record(order(1)) == (1, True)
    assert orders.record(order(1)) == (1, False)
    assert orders.record(order(2)) == (2, True)
    assert orders.count() == 2
    assert orders.outbox_counts() == {"pending": 2, "parked": 0}
    stored, sequence = orders.get("o-1")  # type: ignore[misc]
    assert (stored, sequence) == (order(1), 1)
    assert stored.unit_price == Decimal("0.10")


def test_orders_survive_a_new_connection(database_url: str) -> None:
    OrderStore(Database(database_url, ORDER_SCHEMA)).record(order(1, price="999999.99"))
    again = OrderStore(Database(database_url, ORDER_SCHEMA))
    assert again.get("o-1")[0].unit_price == Decimal("999999.99")  # type: ignore[index]


def test_the_log_is_read_in_pages(orders: OrderStore) -> None:
    for n in range(5):
        orders.record(order(n))
    first = orders.page(0, 2)
    assert [seq for _, seq in first] == [1, 2]
    assert [seq for _, seq in orders.page(2, 10)] == [3, 4, 5]
    assert orders.page(5, 10) == []


def test_a_claimed_row_is_not_claimed_again_until_its_lease_ends(orders: OrderStore) -> None:
    orders.record(order(1))
    first = orders.claim_due(10, lease_seconds=60)
    assert [row.subject for row in first] == ["o-1"]
    assert first[0].data["sequence"] == 1 and first[0].data["unitPrice"] == "0.10"
    assert orders.claim_due(10, lease_seconds=60) == []
    orders.mark_failed(first[0].id, "boom", retry_at=0)
    again = orders.claim_due(10, lease_seconds=60)
    assert again[0].attempts == 1
    orders.mark_sent([again[0].id])
    assert orders.outbox_counts() == {"pending": 0, "parked": 0}


def test_concurrent_relays_never_claim_the_same_row(orders: OrderStore) -> None:
    for n in range(200):
        orders.record(order(n))
    claimed: list[int] = []
    lock = threading.Lock()

    def claim() -> None:
        while rows := orders.claim_due(7, lease_seconds=60):
            with lock:
                claimed.extend(row.id for row in rows)

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(set(claimed))
    assert len(claimed) == 200


def test_parked_rows_wait_for_a_hand(orders: OrderStore) -> None:
    orders.record(order(1))
    row = orders.claim_due(10, 60)[0]
    orders.park(row.id, "refused with 400: bad")
    assert orders.claim_due(10, 0) == []
    assert orders.outbox("parked")[0]["lastError"] == "refused with 400: bad"
    assert orders.retry(row.id) is True
    assert orders.retry(row.id) is False
    assert [r.id for r in orders.claim_due(10, 60)] == [row.id]


def test_a_delta_is_applied_exactly_once(stats: StatsStore) -> None:
    pears = delta(1, "pear", 2, "0.35")
    assert stats.apply(pears) is True
    assert stats.apply(pears) is False
    assert stats.is_applied("o-1") and not stats.is_applied("o-2")
    totals = stats.totals()
    assert totals["products"]["pear"] == {"quantity": 2, "totalPrice": "0.70"}
    assert totals["products"]["apple"] == {"quantity": 0, "totalPrice": "0.00"}
    assert totals["ordersCounted"] == 1
    applied_at = datetime.fromisoformat(totals["updatedAt"])
    assert abs((datetime.now(UTC) - applied_at).total_seconds()) < 60


def test_money_adds_up_exactly_at_any_size(stats: StatsStore) -> None:
    for n in range(3):
        stats.apply(delta(100 + n, "apple", 1, "0.10"))
    assert stats.totals()["products"]["apple"]["totalPrice"] == "0.30"
    big = Decimal("1000000000000.00")  # a million of them at a million each
    for n in range(3):
        stats.apply(StatsDelta(f"big-{n}", "pear", 1_000_000, Decimal("1000000.00"), big))
    assert stats.totals()["products"]["pear"] == {
        "quantity": 3_000_000, "totalPrice": "3000000000000.00",
    }  # fmt: skip


def test_concurrent_duplicate_deliveries_count_once(stats: StatsStore) -> None:
    deltas = [delta(n, "apple", 1, "0.01") for n in range(100)]

    def deliver() -> None:
        for delta in deltas:
            stats.apply(delta)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert stats.totals()["products"]["apple"] == {"quantity": 100, "totalPrice": "1.00"}
    assert stats.totals()["ordersCounted"] == 100


def test_an_unreachable_store_is_unavailable_not_a_crash() -> None:
    db = Database("postgresql://nobody@127.0.0.1:1/none", ORDER_SCHEMA)
    with pytest.raises(StoreUnavailableError):
        db.ping()
    with pytest.raises(ValueError):
        Database("mysql://x", ORDER_SCHEMA)


def test_claims_are_handed_back_by_token_or_by_owner(orders: OrderStore) -> None:
    for n in range(3):
        orders.record(order(n))
    mine = orders.claim_due(1, 60, "pod-a/1")
    theirs = orders.claim_due(1, 60, "pod-b/1")
    also_mine = orders.claim_due(1, 60, "pod-a/2")
    assert orders.claim_due(10, 60, "pod-c/1") == []
    assert orders.release("pod-a/2") == 1
    assert [r.id for r in orders.claim_due(10, 60, "pod-c/2")] == [also_mine[0].id]
    # A restarted pod takes back what it held, and nothing of another pod's.
    assert orders.release_owner("pod-a") == 1
    assert [r.id for r in orders.claim_due(10, 60, "pod-a/3")] == [mine[0].id]
    assert theirs[0].id not in [r.id for r in orders.claim_due(10, 60, "pod-d/1")]


def test_postgresql_threads_share_a_small_pool_of_connections(postgres_url: str) -> None:
    """Twelve threads writing at once open, and hold, at most PG_POOL_SIZE sessions."""
    store = OrderStore(Database(postgres_url, ORDER_SCHEMA))
    store.db.ensure_schema()
    barrier = threading.Barrier(12)

    def place(n: int) -> None:
        barrier.wait()
        for i in range(10):
            store.record(order(n * 100 + i))

    threads = [threading.Thread(target=place, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    opened = store.db._pool.get_stats()["connections_num"]  # psycopg_pool's own count
    assert 1 <= opened <= PG_POOL_SIZE  # not one per thread
    with store.db.read() as tx:
        sessions = tx.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        ).fetchone()[0]
        assert tx.execute("SELECT count(*) FROM orders").fetchone()[0] == 120
    assert sessions <= PG_POOL_SIZE
    store.db.close()
    assert store.db._pool is None

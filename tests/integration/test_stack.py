"""The six roles as real gunicorn processes on loopback, driven through the dispatcher."""

from __future__ import annotations

import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import pytest
import requests

from devtools.stack import Stack
from tests.conftest import start_stack
from tests.support import expected_after, place, problem_of, totals, wait_for

pytestmark = pytest.mark.slow
PRICES = ["0.10", "0.01", "1.50", "2.99", "0", "10"]


def place_concurrently(base_url: str, count: int, clients: int) -> list[tuple[str, int, str]]:
    """Place `count` random orders from `clients` threads; every one must be accepted."""
    rng = random.Random(count)
    orders = [(rng.choice(["apple", "pear"]), rng.randint(1, 5), rng.choice(PRICES))
              for _ in range(count)]  # fmt: skip

    def worker(chunk: list[tuple[str, int, str]]) -> None:
        with requests.Session() as session:
            for product, quantity, price in chunk:
                response = place(base_url, product, quantity, price, str(uuid.uuid4()), session)
                assert response.status_code == 202, response.text

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, [orders[i::clients] for i in range(clients)]))
    return orders


def test_every_role_answers_health_and_readiness(live_stack: Stack) -> None:
    for role in live_stack.ports:
        assert requests.get(f"{live_stack.url(role)}/healthz", timeout=5).status_code == 200
        assert requests.get(f"{live_stack.url(role)}/readyz", timeout=5).status_code == 200


def listening_addresses(port: int) -> set[str]:
    """The IPv4/IPv6 addresses something listens on at `port` (/proc/net/tcp*, state 0A)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hexport = local.rpartition(":")
            if state == "0A" and int(hexport, 16) == port:
                found.add(address)
    return found


def test_every_role_listens_on_loopback_only(live_stack: Stack) -> None:
    loopback = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1
    for role, port in live_stack.ports.items():
        addresses = listening_addresses(port)
        assert addresses and addresses <= loopback, (role, addresses)


def test_thousand_concurrent_orders_all_show_exactly(live_stack: Stack) -> None:
    base = live_stack.url("dispatcher")
    before = totals(base)
    started = time.monotonic()
    orders = place_concurrently(base, count=1000, clients=8)
    placed = time.monotonic()
    expected = expected_after(before, orders)
    wait_for(lambda: totals(base) == expected, timeout=120)
    shown = time.monotonic()
    rate = 1000 / (placed - started)
    print(f"\n1000 orders by 8 clients: placed in {placed - started:.2f}s ({rate:.0f}/s),"
          f" all counted {shown - placed:.2f}s later")  # fmt: skip


def test_the_readme_examples_work(live_stack: Stack) -> None:
    base = live_stack.url("dispatcher")
    assert (
        requests.get(f"{base}/", allow_redirects=False, timeout=5)
        .headers["Location"]
        .endswith("/order")
    )
    before = totals(base)
    response = requests.post(
        f"{base}/api/orders",
        json={"product": "apple", "quantity": 3, "unitPrice": "1.50"},
        headers={"Idempotency-Key": "readme-1"},
        timeout=10,
    )
    assert response.status_code == 202
    order_id = response.json()["orderId"]
    retried = requests.post(
        f"{base}/api/orders",
        json={"product": "apple", "quantity": 3, "unitPrice": "1.50"},
        headers={"Idempotency-Key": "readme-1"},
        timeout=10,
    )
    assert retried.json()["orderId"] == order_id
    form = requests.post(
        f"{base}/order", data={"product": "pear", "quantity": "2", "unitPrice": "0.5"}, timeout=10
    )
    assert form.status_code == 202
    expected = expected_after(before, [("apple", 3, "1.50"), ("pear", 2, "0.5")])
    wait_for(lambda: totals(base) == expected)
    status = requests.get(f"{base}{response.headers['Location']}", timeout=5).json()
    assert status == {"orderId": order_id, "status": "counted"}
    legacy = requests.get(f"{base}/order/orders", timeout=5).json()
    assert Decimal(str(legacy["totalPriceApple"])) == expected["apple"][1]
    assert legacy["quantityPear"] == expected["pear"][0]
    bad = requests.post(
        f"{base}/api/orders", json={"product": "kiwi", "quantity": 0, "unitPrice": "1"}, timeout=5
    )
    assert bad.status_code == 400
    assert {p["name"] for p in problem_of(bad)["invalid-params"]} == {"product", "quantity"}
    assert requests.get(f"{base}/openapi.json", timeout=5).json()["openapi"] == "3.1.0"
    assert totals(base) == expected


def test_a_killed_role_is_restarted_and_orders_survive(live_stack: Stack) -> None:
    import signal

    base = live_stack.url("dispatcher")
    before = totals(base)
    orders = place_concurrently(base, count=20, clients=2)
    expected = expected_after(before, orders)
    wait_for(lambda: totals(base) == expected)
    restarts = live_stack.restarts["stats-order-db"]
    live_stack.signal("stats-order-db", signal.SIGKILL)
    wait_for(lambda: live_stack.restarts["stats-order-db"] > restarts, timeout=10)
    live_stack.wait_ready(["stats-order-db"])
    assert totals(base) == expected  # the read store is on disk, not in the process


def test_the_stack_runs_on_postgresql(tmp_path: Path, postgres_server: str) -> None:
    import psycopg

    from tests.conftest import _with_database

    urls = {}
    for role, name in (("order-db", "orders"), ("stats-order-db", "stats")):
        db = f"cqrs_stack_{name}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{db}"')
        urls[role] = _with_database(postgres_server, db)
    stack = start_stack(tmp_path, database_urls=urls)
    try:
        base = stack.url("dispatcher")
        orders = place_concurrently(base, count=200, clients=8)
        expected = expected_after(
            {"apple": (0, Decimal(0)), "pear": (0, Decimal(0)), "orders": (0, Decimal(0))}, orders
        )
        wait_for(lambda: totals(base) == expected, timeout=60)
    finally:
        stack.stop()

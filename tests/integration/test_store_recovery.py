"""Stores that go away and come back: while a store cannot take writes, its role answers 503 with
Retry-After and is not ready; once it can, the role recovers by itself, without a restart."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cloudevents.core.bindings.http import to_binary_event
from flask import Flask

import order_db
import stats_order_db
from cqrs_common import events
from cqrs_common.cloudevents_io import new_event
from cqrs_common.domain import now_iso
from tests.support import role_settings, wait_for

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def placed(order_id: str) -> tuple[dict[str, str], bytes]:
    data = {"orderId": order_id, "product": "pear", "quantity": 2, "unitPrice": "0.35",
            "placedAt": now_iso()}  # fmt: skip
    message = to_binary_event(new_event(events.ORDER_PLACED, "/test", order_id, data))
    return dict(message.headers), message.body


def delta(order_id: str) -> tuple[dict[str, str], bytes]:
    data = {
        "orderId": order_id,
        "product": "apple",
        "quantity": 1,
        "unitPrice": "1.00",
        "amount": "1.00",
    }
    message = to_binary_event(new_event(events.STATS_DELTA, "/test", order_id, data))
    return dict(message.headers), message.body


# -- SQLite: a folder that is read-only when the role starts ------------------------------------

# Runs in a child process: as root, permissions do not bind, so the child drops to nobody first.
SQLITE_SCENARIO = textwrap.dedent(
    """
    import json, os, sys
    import flask.testing, pdb  # imported now: after the drop, the interpreter's home is closed
    import order_db
    from tests.integration.test_store_recovery import placed
    base = sys.argv[1]
    if os.geteuid() == 0:
        os.chown(base, 65534, 65534)
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
    os.chmod(base, 0o555)
    seen = {}
    from tests.support import role_settings
    settings = role_settings("order-db", DATABASE_URL=f"sqlite:///{base}/data/orders.sqlite3",
                             RELAY_ENABLED="0")
    try:
        app = order_db.create_app(settings)
    except Exception as exc:
        print(json.dumps({"create_app": f"{type(exc).__name__}: {exc}"}))
        sys.exit(0)
    client = app.test_client()
    headers, body = placed("ro-1")
    answer = client.post("/", headers=headers, data=body)
    seen["read_only"] = [answer.status_code, answer.headers.get("Retry-After"), answer.mimetype]
    seen["read_only_ready"] = client.get("/readyz").status_code
    os.chmod(base, 0o755)
    answer = client.post("/", headers=headers, data=body)
    seen["writable"] = answer.status_code
    seen["writable_ready"] = client.get("/readyz").status_code
    print(json.dumps(seen))
    """
)


def test_sqlite_in_a_read_only_folder_is_unavailable_then_recovers() -> None:
    # Not under pytest's tmp_path: its folders are private to root, and the child may be nobody.
    top = Path(tempfile.mkdtemp(prefix="cqrs-readonly-"))
    try:
        top.chmod(0o755)
        base = top / "store"
        base.mkdir()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        run = subprocess.run(
            [sys.executable, "-c", SQLITE_SCENARIO, str(base)],
            capture_output=True, text=True, timeout=120, cwd=REPO, env=env,
        )  # fmt: skip
    finally:
        shutil.rmtree(top, ignore_errors=True)
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert "create_app" not in seen, seen  # the role starts, and says it is not ready
    assert seen["read_only"] == [503, "1", "application/problem+json"], seen
    assert seen["read_only_ready"] == 503, seen
    assert seen["writable"] == 201, seen
    assert seen["writable_ready"] == 200, seen


# -- PostgreSQL: a primary that only reads (a standby after a failover) ----------------------------


def set_read_only(server: str, url: str, on: bool) -> None:
    """As after a failover: the database takes no writes in new sessions, and the sessions open
    now are cut (a failover breaks them), so the roles reconnect to a server that only reads."""
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(server, autocommit=True) as conn:
        value = "on" if on else "off"
        conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = {value}')
        if on:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )


@pytest.mark.parametrize(
    ("role", "factory", "event", "created"),
    [
        ("order-db", order_db.create_app, placed, 201),
        ("stats-order-db", stats_order_db.create_app, delta, 200),
    ],
    ids=["order-db", "stats-order-db"],
)
def test_a_postgresql_that_only_reads_is_a_503_then_recovers_by_itself(
    postgres_server: str,
    postgres_url: str,
    role: str,
    factory: Callable[..., Flask],
    event: Callable[[str], tuple[dict[str, str], bytes]],
    created: int,
) -> None:
    app = factory(role_settings(role, DATABASE_URL=postgres_url, RELAY_ENABLED="0"))
    client = app.test_client()
    headers, body = event("pg-1")
    assert client.post("/", headers=headers, data=body).status_code == created
    set_read_only(postgres_server, postgres_url, True)
    try:
        # Every write is a 503 (the first may meet the cut connection: 503 as well).
        headers, body = event("pg-2")
        for _ in range(3):
            answer = client.post("/", headers=headers, data=body)
            assert answer.status_code == 503, answer.data
            assert answer.headers["Retry-After"] == "1"
            assert answer.mimetype == "application/problem+json"
        assert client.get("/readyz").status_code == 503
    finally:
        set_read_only(postgres_server, postgres_url, False)
    # No restart, no reconnect by hand: the role finds a writable session on its own.
    started = time.monotonic()
    wait_for(lambda: client.get("/readyz").status_code == 200, timeout=30)
    assert client.post("/", headers=headers, data=body).status_code == created
    print(f"\nPostgreSQL writable again: ready {time.monotonic() - started:.2f}s later")

"""SQLite group commit: transactions that share one COMMIT stay separate in every other way."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from cqrs_common.db import Database, close_all

SCHEMA = {"sqlite": ["CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY)"], "postgresql": []}


class Refused(Exception):
    pass


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database(f"sqlite:///{tmp_path / 'g.sqlite3'}", SCHEMA)


def committed(db: Database) -> set[str]:
    """What another connection sees: only what was committed."""
    with sqlite3.connect(db.path) as conn:
        return {row[0] for row in conn.execute("SELECT k FROM t")}


def test_concurrent_transactions_all_commit_and_a_failed_one_leaves_nothing(db: Database) -> None:
    barrier = threading.Barrier(8)
    seen_after_return: list[bool] = []

    def writer(n: int) -> None:
        barrier.wait()
        for i in range(40):
            key = f"{n}-{i}"
            try:
                with db.transaction() as tx:
                    tx.execute("INSERT INTO t (k) VALUES (?)", (key,))
                    tx.execute("INSERT INTO t (k) VALUES (?)", (key + "-b",))
                    if i % 10 == 0:
                        raise Refused  # rolls back this transaction only
            except Refused:
                continue
            # Durable before the block returns: another connection sees it at once.
            seen_after_return.append(key in committed(db))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    expected = {f"{n}-{i}{s}" for n in range(8) for i in range(40) if i % 10 for s in ("", "-b")}
    assert committed(db) == expected
    assert seen_after_return and all(seen_after_return)


def test_a_failed_statement_undoes_its_own_transaction_only(db: Database) -> None:
    with db.transaction() as tx:
        tx.execute("INSERT INTO t (k) VALUES ('a')")
    with pytest.raises(Exception, match="UNIQUE"), db.transaction() as tx:
        tx.execute("INSERT INTO t (k) VALUES ('a')")
    with db.transaction() as tx:
        tx.execute("INSERT INTO t (k) VALUES ('b')")
    assert committed(db) == {"a", "b"}


def test_a_failed_lone_transaction_does_not_keep_the_write_lock(db: Database) -> None:
    with pytest.raises(Refused), db.transaction() as tx:
        tx.execute("INSERT INTO t (k) VALUES ('gone')")
        raise Refused
    # Another process (here: another connection) can write at once.
    other = sqlite3.connect(db.path, timeout=0.5, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t (k) VALUES ('other')")
    other.execute("COMMIT")
    other.close()
    assert committed(db) == {"other"}


def test_close_all_leaves_no_connection_to_cross_a_fork(db: Database) -> None:
    """gunicorn's master loads the app (preload_app) and closes what it opened before forking."""
    with db.transaction() as tx:
        tx.execute("INSERT INTO t VALUES ('before')")
    with db.read() as tx:
        tx.execute("SELECT 1").fetchone()
    close_all()
    assert db._writer is None and db._local.conn is None
    with db.transaction() as tx:  # the next use opens its own
        tx.execute("INSERT INTO t VALUES ('after')")
    assert committed(db) == {"before", "after"}

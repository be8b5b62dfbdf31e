"""The storage layer's error model, fault by fault, the same on SQLite and on a real PostgreSQL:
a fault that passes is StoreUnavailableError (a 503, retried); a refused statement is StoreError
(a 500, never retried); the store recovers by itself."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from cqrs_common import db as db_module
from cqrs_common.db import Database, StoreError, StoreReadOnlyError, StoreUnavailableError

TABLE = "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v TEXT NOT NULL)"


@pytest.fixture
def db(database_url: str) -> Database:
    database = Database(database_url, {"sqlite": [TABLE], "postgresql": [TABLE]})
    with database.transaction() as tx:
        tx.execute("INSERT INTO t VALUES (?, ?)", ("a", "1"))
    return database


REFUSED = {
    "a unique violation": ("INSERT INTO t VALUES (?, ?)", ("a", "2")),
    "a NOT NULL violation": ("INSERT INTO t VALUES (?, ?)", ("b", None)),
    "a syntax error": ("INSERT INTO t VALUES (?, ?", ("b", "2")),
    "a table that is not there": ("INSERT INTO nope VALUES (?)", ("b",)),
    "a wrong bind count": ("INSERT INTO t VALUES (?, ?)", ("b",)),
}


@pytest.mark.parametrize(("sql", "params"), REFUSED.values(), ids=REFUSED.keys())
def test_a_refused_statement_is_not_unavailable_and_changes_nothing(
    db: Database, sql: str, params: tuple[str, ...]
) -> None:
    with pytest.raises(StoreError) as caught, db.transaction() as tx:
        tx.execute("INSERT INTO t VALUES (?, ?)", ("c", "3"))
        tx.execute(sql, params)
    assert not isinstance(caught.value, StoreUnavailableError), caught.value
    assert isinstance(caught.value.__cause__, Exception)  # the driver's error, for the log
    with db.read() as tx:  # the transaction is undone whole, and the store still serves
        assert tx.execute("SELECT k, v FROM t ORDER BY k").fetchall() == [("a", "1")]


def test_a_question_mark_or_a_percent_sign_in_a_literal_is_kept(db: Database) -> None:
    with db.transaction() as tx:
        tx.execute("INSERT INTO t VALUES (?, 'why? 100%, it''s ?')", ("q",))
    with db.read() as tx:
        assert tx.execute("SELECT v FROM t WHERE k = ?", ("q",)).fetchone() == (
            "why? 100%, it's ?",
        )
        assert tx.execute("SELECT 7 % 4").fetchone() == (3,)


def test_a_deleted_sqlite_file_takes_no_write_and_is_not_ready(tmp_path: Path) -> None:
    """Writes to a file deleted under an open connection are answered and lost at the next
    restart: the store must refuse them, as its readiness does."""
    path = tmp_path / "store.sqlite3"
    db = Database(f"sqlite:///{path}", {"sqlite": [TABLE], "postgresql": [TABLE]})
    with db.transaction() as tx:
        tx.execute("INSERT INTO t VALUES (?, ?)", ("a", "1"))
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        name.unlink(missing_ok=True)
    with pytest.raises(StoreReadOnlyError), db.transaction() as tx:
        tx.execute("INSERT INTO t VALUES (?, ?)", ("b", "2"))
    with pytest.raises(StoreReadOnlyError):
        db.ping()


def _end_sessions(url: str) -> None:
    """The server ends every other session of the database (an admin shutdown, 57P01)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


def _backend(db: Database) -> int:
    with db.read() as tx:
        return tx.execute("SELECT pg_backend_pid()").fetchone()[0]


def test_an_idle_postgresql_session_the_server_ended_is_replaced_when_taken(
    postgres_url: str,
) -> None:
    """The pool checks a connection as it hands it out: the next transaction gets a new session
    and succeeds, instead of a 503 for a session that died while nobody used it."""
    db = Database(postgres_url, {"sqlite": [TABLE], "postgresql": [TABLE]})
    with db.transaction() as tx:
        tx.execute("INSERT INTO t VALUES (?, ?)", ("a", "1"))
    before = _backend(db)
    _end_sessions(postgres_url)
    with db.read() as tx:
        assert tx.execute("SELECT count(*) FROM t").fetchone() == (1,)
    assert _backend(db) != before
    db.close()


def test_a_postgresql_session_ended_inside_a_transaction_is_unavailable_then_recovers(
    postgres_url: str,
) -> None:
    db = Database(postgres_url, {"sqlite": [TABLE], "postgresql": [TABLE]})
    with pytest.raises(StoreUnavailableError), db.transaction() as tx:
        tx.execute("INSERT INTO t VALUES (?, ?)", ("a", "1"))
        _end_sessions(postgres_url)
        tx.execute("INSERT INTO t VALUES (?, ?)", ("b", "2"))
    with db.read() as tx:  # a new session; nothing of the broken transaction was kept
        assert tx.execute("SELECT count(*) FROM t").fetchone() == (0,)
    db.close()


def test_a_postgresql_session_is_retired_after_its_lifetime(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "PG_POOL_LIFETIME", 0.2)
    db = Database(postgres_url, {"sqlite": [TABLE], "postgresql": [TABLE]})
    first = _backend(db)
    assert _backend(db) == first  # reused while young
    time.sleep(0.3)
    _backend(db)  # given back old: retired
    assert _backend(db) != first
    db.close()


def test_waiting_for_a_postgresql_session_is_bounded(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every session held: a transaction waits PG_POOL_WAIT, then is unavailable (a 503)."""
    monkeypatch.setattr(db_module, "PG_POOL_WAIT", 0.3)
    db = Database(postgres_url, {"sqlite": [TABLE], "postgresql": [TABLE]})
    db.ensure_schema()
    held, release = threading.Barrier(db_module.PG_POOL_SIZE + 1), threading.Event()

    def hold() -> None:
        with db.read():
            held.wait()
            release.wait(10)

    threads = [threading.Thread(target=hold) for _ in range(db_module.PG_POOL_SIZE)]
    for thread in threads:
        thread.start()
    held.wait()
    began = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="couldn't get a connection"), db.read():
        pass
    waited = time.monotonic() - began
    release.set()
    for thread in threads:
        thread.join()
    assert 0.25 < waited < 3
    with db.read() as tx:  # free again
        assert tx.execute("SELECT 1").fetchone() == (1,)
    db.close()


def test_sqlite_and_postgresql_agree_on_each_fault(tmp_path: Path, postgres_url: str) -> None:
    """The same statement, the same class of answer: the two dialects never disagree."""
    answers: dict[str, list[str]] = {}
    for url in (f"sqlite:///{tmp_path / 's.sqlite3'}", postgres_url):
        db = Database(url, {"sqlite": [TABLE], "postgresql": [TABLE]})
        with db.transaction() as tx:
            tx.execute("INSERT INTO t VALUES (?, ?)", ("a", "1"))
        for sql, params in REFUSED.values():
            try:
                with db.transaction() as tx:
                    tx.execute(sql, params)
            except Exception as exc:
                answers.setdefault(db.dialect, []).append(type(exc).__name__)
    assert answers["sqlite"] == answers["postgresql"] == ["StoreError"] * len(REFUSED)

"""The storage layer's error model, fault by fault, the same on SQLite and on a real PostgreSQL:
a fault that passes is StoreUnavailableError (a 503, retried); a refused statement is StoreError
(a 500, never retried); the store recovers by itself."""

from __future__ import annotations

from pathlib import Path

import pytest

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


def test_a_postgresql_session_ended_by_the_server_is_unavailable_then_recovers(
    postgres_url: str,
) -> None:
    import psycopg

    db = Database(postgres_url, {"sqlite": [TABLE], "postgresql": [TABLE]})
    with db.transaction() as tx:
        tx.execute("INSERT INTO t VALUES (?, ?)", ("a", "1"))
    with psycopg.connect(postgres_url, autocommit=True) as admin:  # an admin shutdown, 57P01
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    with pytest.raises(StoreUnavailableError), db.read() as tx:
        tx.execute("SELECT count(*) FROM t")
    with db.read() as tx:  # a new connection
        assert tx.execute("SELECT count(*) FROM t").fetchone() == (1,)


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

"""One small storage adapter over SQLite (one machine) and PostgreSQL (a cluster).

Queries are written once with `?` placeholders; PostgreSQL gets them as `%s` (a `?` inside a
quoted literal stays one, and `%` is escaped). On PostgreSQL the threads share a small
psycopg_pool (checked connections, a lifetime, a bounded wait). On SQLite each thread holds its
own connection for reads, and every write of the process goes through one connection with
group commit: the transactions that arrive while a commit is being flushed share the next
COMMIT and its fsync, each inside its own SAVEPOINT, and none of them returns before that
COMMIT is durable.

Errors are translated per driver, as pyeventsourcing does with the PEP 249 tree, so that both
dialects answer the same fault the same way:
- transient (a server gone or shutting down, a file that cannot be opened or written, the
  database locked, read-only or full, a serialization failure): StoreUnavailableError, a 503
  that senders retry. The connection is dropped, so the next transaction reconnects and the
  store recovers by itself once it is back;
- the query or the data is wrong (a constraint, a syntax error, a wrong bind count): StoreError,
  never retried: the web layer's 500, logged with its cause.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

# Taken by every process creating the schema on PostgreSQL, so replicas starting together
# do not race on CREATE TABLE IF NOT EXISTS.
_SCHEMA_LOCK_KEY = 0x63717273
# SQLSTATE 25006: a write in a read-only transaction (a hot standby, or a primary told to only
# read, as after a failover until the clients reconnect to the new primary).
_PG_READ_ONLY = "25006"
# PostgreSQL: the process's threads share at most this many connections (psycopg_pool). A
# statement is a round trip of well under a millisecond, so 8 request threads and the relay seldom
# hold more than two at once; a connection per thread was a server process each and libpq's
# buffers in the role (order-db at 50.8 MiB PSS, make bench). A transaction waits this long for
# one, then 503. Each is checked when taken (an idle session the server ended is replaced, not
# answered 503), retired after PG_POOL_LIFETIME (a moved primary, a server's per-session memory)
# and closed after PG_POOL_IDLE unused (a scaled-down role gives its sessions back).
PG_POOL_SIZE = 3
PG_POOL_WAIT = 5.0
PG_POOL_LIFETIME = 1800.0
PG_POOL_IDLE = 300.0


# SQLite's primary result codes of a fault that may pass (sqlite3 gives sqlite_errorcode; the low
# byte is the primary code): BUSY, LOCKED, NOMEM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN,
# PROTOCOL, NOTADB. The rest (ERROR: syntax, no such table; CONSTRAINT; MISMATCH; RANGE) is the
# query's or the data's fault.
_SQLITE_TRANSIENT = frozenset({5, 6, 7, 8, 10, 11, 13, 14, 15, 26})
_SQLITE_READ_ONLY = 8
# PostgreSQL's SQLSTATE classes of a fault that may pass: 08 connection, 40 transaction rollback
# (serialization failure, deadlock), 53 insufficient resources (disk full), 57 operator
# intervention (admin shutdown), 58 system error; and 25006, a read-only transaction.
_PG_TRANSIENT_CLASSES = ("08", "40", "53", "57", "58")


class StoreError(Exception):
    """The store refused what it was asked (a constraint, a bad statement): not worth a retry."""


class StoreUnavailableError(StoreError):
    """The store could not be reached or could not commit; answered 503 so the sender retries."""


class StoreReadOnlyError(StoreUnavailableError):
    """The store answers but takes no writes (a standby, a read-only folder)."""


class Transaction:
    def __init__(self, cursor: Any, dialect: str) -> None:
        self._cursor = cursor
        self.dialect = dialect

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Transaction:
        if self.dialect == "postgresql":
            sql = _pg_placeholders(sql)
        self._cursor.execute(sql, tuple(params))
        return self

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._cursor.fetchone()

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._cursor.fetchall()


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


@functools.lru_cache(maxsize=256)
def _pg_placeholders(sql: str) -> str:
    """`?` to `%s` outside quoted literals, `%` to `%%` everywhere (psycopg reads `%` as a
    placeholder's start, in literals too). Splitting on `'` leaves the literals at odd indexes,
    an escaped `''` included."""
    parts = sql.replace("%", "%%").split("'")
    return "'".join(p.replace("?", "%s") if i % 2 == 0 else p for i, p in enumerate(parts))


class _Batch:
    """Transactions that will share one SQLite COMMIT."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = False
        self.error: BaseException | None = None


@dataclass(frozen=True)
class AddColumn:
    """A column a later version added to an existing table: added once, on a store made before
    it (SQLite has no ADD COLUMN IF NOT EXISTS; PostgreSQL does)."""

    table: str
    column: str
    type: str

    def apply(self, tx: Transaction) -> None:
        if tx.dialect == "postgresql":
            tx.execute(
                f"ALTER TABLE {self.table} ADD COLUMN IF NOT EXISTS {self.column} {self.type}"
            )
            return
        columns = {row[1] for row in tx.execute(f"PRAGMA table_info({self.table})").fetchall()}
        if self.column not in columns:
            tx.execute(f"ALTER TABLE {self.table} ADD COLUMN {self.column} {self.type}")


# Every store of the process, so that a gunicorn master that loaded the app can close what
# it opened before it forks (close_all): a child must never share a parent's connection.
_DATABASES: weakref.WeakSet[Database] = weakref.WeakSet()


def close_all() -> None:
    """Close this thread's connections (and the SQLite writer) of every store in the process.

    gunicorn_conf.pre_fork calls it in the master, which loads the app (preload_app) and may
    have connected while doing so (stats-order-db creates its schema at start): SQLite's locks
    and a PostgreSQL session belong to one process, and the worker opens its own on first use.
    """
    for database in list(_DATABASES):
        with contextlib.suppress(Exception):  # a store that is down has nothing to close
            database.close()


class Database:
    """Connections, transactions and the schema of one store, named by a DATABASE_URL."""

    def __init__(self, url: str, schema: Mapping[str, Sequence[str | AddColumn]]) -> None:
        if url.startswith("sqlite:///"):
            self.dialect = "sqlite"
            self.path = url.removeprefix("sqlite:///")
        elif url.startswith(("postgresql://", "postgres://")):
            self.dialect = "postgresql"
            self.path = url
        else:
            raise ValueError("DATABASE_URL must start with sqlite:/// or postgresql://")
        self.url = url
        self._schema = schema[self.dialect]
        self._local = threading.local()
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        # SQLite group commit. Threads queue on a Python lock, not on SQLite's busy handler,
        # which sleeps in steps of up to 100 ms and made p99 latency under load.
        self._writer: sqlite3.Connection | None = None
        self._write_lock = threading.Lock()  # one transaction body at a time on the writer
        self._commit_lock = threading.Lock()  # one COMMIT (fsync) at a time
        self._batch: _Batch | None = None
        self._writer_file: tuple[int, int] | None = None  # the writer's file (device, inode)
        # PostgreSQL's pool, opened on first use in the process that uses it (never before a
        # fork: its threads and sessions would not follow).
        self._pool: Any = None
        self._pool_lock = threading.Lock()
        _DATABASES.add(self)

    # -- connections -------------------------------------------------------------------------

    def _connect(self) -> Any:
        if self.dialect == "sqlite":
            if os.path.dirname(self.path):
                try:
                    os.makedirs(os.path.dirname(self.path), exist_ok=True)
                except OSError as exc:  # a read-only parent: unavailable until it is writable
                    message = f"cannot create the store's folder: {exc}"
                    raise sqlite3.OperationalError(message) from None
            conn = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            # WAL lets readers run beside the writer; FULL makes each commit survive power loss,
            # which is what "answers 2xx only after the effect is durable" asks for.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
            return conn
        import psycopg  # only the PostgreSQL deployments pay for the import

        return psycopg.connect(self.url, autocommit=True, connect_timeout=5)

    def _connection(self) -> Any:
        """SQLite: this thread's reading connection (writes go through the group writer)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    @contextmanager
    def _pooled(self) -> Iterator[Any]:
        """PostgreSQL: a checked connection of the pool for the block. The pool takes it back if
        it is idle, rolls back one left in a transaction and discards one that broke."""
        with self._postgres_pool().connection() as conn:
            yield conn

    def _postgres_pool(self) -> Any:
        with self._pool_lock:
            if self._pool is None:
                from psycopg_pool import ConnectionPool  # only PostgreSQL deployments import it

                self._pool = ConnectionPool(
                    self.url,
                    kwargs={"autocommit": True, "connect_timeout": 5},
                    min_size=0,  # connect on demand: a role that never reads opens nothing
                    max_size=PG_POOL_SIZE,
                    timeout=PG_POOL_WAIT,
                    check=ConnectionPool.check_connection,
                    max_lifetime=PG_POOL_LIFETIME,
                    max_idle=PG_POOL_IDLE,
                    num_workers=1,
                    name=f"cqrs-{id(self):x}",
                    open=True,
                )
            return self._pool

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            # closing a broken connection may fail too; it is gone either way
            with contextlib.suppress(Exception):
                conn.close()

    def _store_errors(self) -> tuple[type[BaseException], ...]:
        if self.dialect == "sqlite":
            return (sqlite3.Error,)
        import psycopg

        return (psycopg.Error,)

    def _translated(self, exc: BaseException) -> StoreError:
        """The driver's error as the shop's: StoreUnavailableError (its read-only kind) for a
        fault that may pass, after forgetting this thread's connection (the next transaction
        opens a new one: to the new primary after a failover, or a file now writable), else
        StoreError."""
        message = f"{self.dialect} store: {str(exc).strip()}"
        if isinstance(exc, sqlite3.Error):
            code = getattr(exc, "sqlite_errorcode", None)
            if isinstance(exc, sqlite3.OperationalError) and code is None:  # raised here
                code = 14
            transient = code is not None and code & 0xFF in _SQLITE_TRANSIENT
            read_only = code is not None and code & 0xFF == _SQLITE_READ_ONLY
        else:
            import psycopg

            state = getattr(exc, "sqlstate", None) or ""
            read_only = state == _PG_READ_ONLY
            lost = (psycopg.OperationalError, psycopg.InterfaceError)  # no SQLSTATE: no server
            transient = (
                read_only
                or state.startswith(_PG_TRANSIENT_CLASSES)
                or (not state and isinstance(exc, lost))
            )
        if not transient:
            return StoreError(message)
        self._drop_connection()
        return StoreReadOnlyError(message) if read_only else StoreUnavailableError(message)

    # -- transactions ------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One atomic unit: everything in the block commits together or not at all."""
        if not self._schema_ready:
            self.ensure_schema()
        with self._raw_transaction() as tx:
            yield tx

    @contextmanager
    def _raw_transaction(self) -> Iterator[Transaction]:
        errors = self._store_errors()
        try:
            if self.dialect == "sqlite":
                with self._sqlite_group_write() as tx:
                    yield tx
            else:
                with self._pooled() as conn, conn.transaction(), conn.cursor() as cursor:
                    yield Transaction(cursor, self.dialect)
        except errors as exc:
            raise self._translated(exc) from exc

    @contextmanager
    def _sqlite_group_write(self) -> Iterator[Transaction]:
        """Run the body in the open batch (or a new one), then wait for the batch's COMMIT."""
        with self._write_lock:
            if self._writer is None:
                self._writer = self._connect()
                self._writer_file = _file_id(self.path)
            conn = self._writer
            if self._batch is None:
                self._check_writable()
                try:
                    # IMMEDIATE takes the write lock up front: no deadlock between processes.
                    conn.execute("BEGIN IMMEDIATE")
                except sqlite3.Error as exc:
                    self._fail_batch(_Batch(), exc)
                    raise
                self._batch = _Batch()
            batch = self._batch
            conn.execute("SAVEPOINT member")
            failure: BaseException | None = None
            try:
                yield Transaction(conn.cursor(), self.dialect)
            except BaseException as exc:
                failure = exc
                try:
                    conn.execute("ROLLBACK TO member")
                    conn.execute("RELEASE member")
                except sqlite3.Error:  # SQLite rolled the whole batch back itself: all fail
                    self._fail_batch(batch, exc)
                    raise
            else:
                conn.execute("RELEASE member")
        if failure is None:
            self._commit(batch)
            return
        # Commit the others' work (or nothing) anyway: a batch left open would hold SQLite's
        # write lock until the next write, blocking any other process on the same file.
        with contextlib.suppress(sqlite3.Error):
            self._commit(batch)
        raise failure

    def _commit(self, batch: _Batch) -> None:
        with self._commit_lock:
            if not batch.done:
                with self._write_lock:
                    self._batch = None
                    batch.done = True
                    try:
                        self._writer.execute("COMMIT")  # type: ignore[union-attr]
                    except sqlite3.Error as exc:
                        self._fail_batch(batch, exc)
        if batch.error is not None:
            raise sqlite3.OperationalError(f"group commit failed: {batch.error}")

    def _fail_batch(self, batch: _Batch, error: BaseException) -> None:
        """Give up the batch: every member answers 503, and the next write starts afresh."""
        batch.done, batch.error = True, error
        if self._batch is batch:
            self._batch = None
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()  # closing rolls back whatever is left

    def _check_writable(self) -> None:
        """SQLite: StoreReadOnlyError unless the file is writable and is still the one the
        writer holds: a write to a file deleted or replaced since would be answered and lost.
        Readiness (ping) and every write ask the same question, so they agree."""
        if not os.access(self.path, os.W_OK):  # a read-only file, folder or mount, or none
            raise StoreReadOnlyError(f"sqlite store: {self.path} is not writable")
        if self._writer is not None and _file_id(self.path) != self._writer_file:
            raise StoreReadOnlyError(f"sqlite store: {self.path} was deleted or replaced")

    @contextmanager
    def read(self) -> Iterator[Transaction]:
        """A read-only snapshot (no write lock on SQLite)."""
        if not self._schema_ready:
            self.ensure_schema()
        errors = self._store_errors()
        try:
            if self.dialect == "sqlite":
                conn = self._connection()
                conn.execute("BEGIN")
                try:
                    yield Transaction(conn.cursor(), self.dialect)
                finally:
                    conn.execute("COMMIT")
            else:
                with self._pooled() as conn, conn.transaction(), conn.cursor() as cursor:
                    yield Transaction(cursor, self.dialect)
        except errors as exc:
            raise self._translated(exc) from exc

    def ensure_schema(self) -> None:
        """Create the tables if they are missing; safe to run from every process at start."""
        with self._schema_lock:
            if self._schema_ready:
                return
            with self._raw_transaction() as tx:
                if self.dialect == "postgresql":
                    tx.execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK_KEY,))
                for statement in self._schema:
                    if isinstance(statement, AddColumn):
                        statement.apply(tx)
                    else:
                        tx.execute(statement)
            self._schema_ready = True

    def ping(self) -> None:
        """Raise StoreUnavailableError unless the store answers and takes writes (readiness)."""
        if self.dialect == "sqlite":
            with self.read() as tx:
                tx.execute("SELECT 1").fetchone()
            self._check_writable()
            return
        if not self._schema_ready:
            self.ensure_schema()
        try:
            with self._pooled() as conn:
                read_only = conn.execute("SHOW transaction_read_only").fetchone()[0] == "on"
                if read_only:
                    # A standby, or a session begun read-only: writes would fail, so not
                    # ready. A new connection for the next check sees whether that is still so.
                    conn.close()
        except self._store_errors() as exc:
            raise self._translated(exc) from exc
        if read_only:
            raise StoreReadOnlyError("postgresql store: the server takes no writes")

    def close(self) -> None:
        self._drop_connection()
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(timeout=1.0)  # its sessions, and its threads
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

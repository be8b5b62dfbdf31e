"""All six apps in one process: requests between roles go to Flask test clients, not sockets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Flask
from urllib3 import HTTPHeaderDict

import command_order
import dispatcher
import order_db
import process_data
import query_order
import stats_order_db
from cqrs_common.client import Client
from cqrs_common.config import Settings
from cqrs_common.db import Database
from cqrs_common.roles import DISPATCHER, ORDER_DB, ROLES, STATS_ORDER_DB
from cqrs_common.transport import Response, TransportError
from devtools.stack import wiring
from dispatcher import Gateway
from order_db.store import SCHEMA as ORDERS_SCHEMA
from order_db.store import OrderStore
from stats_order_db.store import SCHEMA as STATS_SCHEMA
from stats_order_db.store import StatsStore

FACTORIES = {
    "dispatcher": dispatcher.create_app,
    "command-order": command_order.create_app,
    "order-db": order_db.create_app,
    "process-data": process_data.create_app,
    "stats-order-db": stats_order_db.create_app,
    "query-order": query_order.create_app,
}


def host(role: str) -> str:
    return f"http://{role}.test:80"


class Router:
    """A client transport that hands each call to the app named by its host."""

    def __init__(self, apps: dict[str, Flask]) -> None:
        self.apps = apps
        self.seen: list[tuple[str, str, str, dict[str, str]]] = []  # (role, method, path, headers)
        self.down: set[str] = set()  # roles that refuse connections
        self.refuse: set[str] = set()  # roles that answer every request 400
        self.status: dict[str, int] = {}  # roles that answer every request with this status
        self.lose: set[str] = set()  # roles whose next answer is lost after they acted on it

    def urlopen(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: Mapping[str, str],
        timeout: tuple[float, float],
    ) -> Response:
        parts = urlsplit(url)
        role = parts.hostname.removesuffix(".test") if parts.hostname else ""
        if role in self.down or role not in self.apps:
            raise TransportError(f"{role} is down", sent=False)
        path = parts.path or "/"
        self.seen.append((role, method, path, dict(headers)))
        if role in self.refuse:
            return _json_answer(url, 400, b'{"title": "refused for the test"}')
        if role in self.status:
            return _json_answer(url, self.status[role], b'{"title": "set by the test"}')
        answer = (
            self.apps[role]
            .test_client()
            .open(path, method=method, headers=dict(headers), data=body, query_string=parts.query)
        )
        if role in self.lose:
            self.lose.discard(role)
            raise TransportError(
                f"{role} acted, but its answer was lost", sent=True, timed_out=True
            )
        return Response(answer.status_code, answer.get_data(), HTTPHeaderDict(answer.headers), url)

    def close(self) -> None:
        pass


def _json_answer(url: str, status: int, body: bytes) -> Response:
    return Response(status, body, HTTPHeaderDict({"Content-Type": "application/json"}), url)


@dataclass
class Shop:
    """The six apps in one process, the Router between them, and the two stores they were
    given (what a test looks at to see that something changed, or did not)."""

    apps: dict[str, Flask]
    router: Router
    orders: OrderStore
    stats: StatsStore


def build(tmp_path: Path) -> Shop:
    """The six apps wired as `make run` wires them (devtools.stack.wiring), each calling the
    others through a client whose transport is the Router."""
    apps: dict[str, Flask] = {}
    router = Router(apps)
    orders = OrderStore(Database(f"sqlite:///{tmp_path}/{ORDER_DB.store}.sqlite3", ORDERS_SCHEMA))
    stats = StatsStore(
        Database(f"sqlite:///{tmp_path}/{STATS_ORDER_DB.store}.sqlite3", STATS_SCHEMA)
    )
    stores = {ORDER_DB.name: orders, STATS_ORDER_DB.name: stats}
    for role in ROLES:
        env = {**wiring(role, host, "unused:" if role.store else None), "RELAY_ENABLED": "0"}
        client = Client(transport=router)
        settings = Settings.from_env(role.name, env)
        adapters: dict[str, Any] = {}
        if role.name == DISPATCHER.name:
            adapters["gateway"] = Gateway(settings, client)
        elif role.sink is not None or role.peers:
            adapters["client"] = client
        if role.name in stores:
            adapters["store"] = stores[role.name]
        app = FACTORIES[role.name](settings, **adapters)
        app.testing = False  # errors must go through the app's own handlers
        apps[role.name] = app
    return Shop(apps, router, orders, stats)


def relay(apps: dict[str, Flask]) -> dict[str, int]:
    """Deliver the outbox's due rows now, as the relay's loop or a PingSource would."""
    return apps["order-db"].test_client().post("/outbox/relay").get_json()

"""All six apps in one process: requests between roles go to Flask test clients, not sockets."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from flask import Flask
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

import command_order
import dispatcher
import order_db
import process_data
import query_order
import stats_order_db
from cqrs_common.roles import ROLES

FACTORIES = {
    "dispatcher": dispatcher.create_app,
    "command-order": command_order.create_app,
    "order-db": order_db.create_app,
    "process-data": process_data.create_app,
    "stats-order-db": stats_order_db.create_app,
    "query-order": query_order.create_app,
}


def host(role: str) -> str:
    return f"http://{role}.test"


class Router(BaseAdapter):
    """A requests transport that hands each request to the app named by its host."""

    def __init__(self, apps: dict[str, Flask]) -> None:
        super().__init__()
        self.apps = apps
        self.seen: list[tuple[str, str, str, dict[str, str]]] = []  # (role, method, path, headers)
        self.down: set[str] = set()  # roles that refuse connections
        self.refuse: set[str] = set()  # roles that answer every request 400
        self.status: dict[str, int] = {}  # roles that answer every request with this status
        self.lose: set[str] = set()  # roles whose next answer is lost after they acted on it

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        url = urlsplit(request.url)
        role = url.hostname.removesuffix(".test") if url.hostname else ""
        if role in self.down or role not in self.apps:
            raise requests.ConnectionError(f"{role} is down")
        headers = dict(request.headers)
        self.seen.append((role, request.method or "GET", url.path, headers))
        if role in self.refuse:
            return self._answer(request, 400, b'{"title": "refused for the test"}')
        if role in self.status:
            return self._answer(request, self.status[role], b'{"title": "set by the test"}')
        answer = self.apps[role].test_client().open(
            url.path, method=request.method, headers=headers, data=request.body,
            query_string=url.query,
        )  # fmt: skip
        if role in self.lose:
            self.lose.discard(role)
            raise requests.ReadTimeout(f"{role} acted, but its answer was lost")
        return self._answer(request, answer.status_code, answer.get_data(), dict(answer.headers))

    @staticmethod
    def _answer(request: requests.PreparedRequest, status: int, body: bytes,
                headers: dict[str, str] | None = None) -> requests.Response:  # fmt: skip
        response = requests.Response()
        response.status_code = status
        response._content = body
        response.headers = CaseInsensitiveDict(headers or {"Content-Type": "application/json"})
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass


def build(tmp_path: Path) -> tuple[dict[str, Flask], Router]:
    env = {
        "K_SINK": "",
        "COMMAND_ORDER_URL": host("command-order"),
        "QUERY_ORDER_URL": host("query-order"),
        "STATS_DB_URL": host("stats-order-db"),
        "ORDER_DB_URL": host("order-db"),
        "RELAY_ENABLED": "0",  # tests drive the relay by hand
    }
    sinks = {
        "command-order": "order-db",
        "order-db": "process-data",
        "process-data": "stats-order-db",
    }
    stores = {"order-db": "orders", "stats-order-db": "stats"}
    apps: dict[str, Flask] = {}
    for role in ROLES:
        role_env = dict(env)
        if role.name in sinks:
            role_env["K_SINK"] = host(sinks[role.name])
        if role.name in stores:
            role_env["DATABASE_URL"] = f"sqlite:///{tmp_path / stores[role.name]}.sqlite3"
        apps[role.name] = FACTORIES[role.name](role_env)
        apps[role.name].testing = False  # errors must go through the app's own handlers
    return apps, Router(apps)


def relay(apps: dict[str, Flask]) -> dict[str, int]:
    return apps["order-db"].extensions["order_db"]["relay"].relay_due()

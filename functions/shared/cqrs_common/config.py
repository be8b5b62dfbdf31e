"""Settings read once from the environment (or a plain dict in tests)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from cqrs_common.roles import ROLES_BY_NAME


def _local_url(role_name: str) -> str:
    return f"http://127.0.0.1:{ROLES_BY_NAME[role_name].port}"


# Where each role sends its events when K_SINK is not set: the next role, as `make run` wires it.
_DEFAULT_SINKS = {
    "command-order": _local_url("order-db"),
    "order-db": _local_url("process-data"),
    "process-data": _local_url("stats-order-db"),
}


@dataclass(frozen=True)
class Settings:
    role: str
    port: int
    sink: str | None
    command_order_url: str
    query_order_url: str
    stats_db_url: str
    order_db_url: str
    database_url: str
    log_level: str = "INFO"
    # Outbound calls: seconds to connect and to read, and how often to retry a transient failure
    # (at the edge only: the dispatcher; the roles behind it make one try each).
    http_timeout: tuple[float, float] = (2.0, 10.0)
    http_retries: int = 3
    # A request's budget when its caller sends none (cqrs_common.deadline): the Knative
    # Services' timeoutSeconds, after which queue-proxy answers 504 anyway.
    request_timeout: float = 30.0
    # Outbox relay: first retry delay, its ceiling, and how often to look for due rows anyway.
    relay_base_delay: float = 0.5
    relay_max_delay: float = 60.0
    relay_poll_interval: float = 5.0
    relay_enabled: bool = True

    @classmethod
    def from_env(cls, role: str, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        data_dir = env.get("CQRS_DATA_DIR", "var")
        default_db = {
            "order-db": f"sqlite:///{data_dir}/orders.sqlite3",
            "stats-order-db": f"sqlite:///{data_dir}/stats.sqlite3",
        }.get(role, "")
        return cls(
            role=role,
            port=int(env.get("PORT", ROLES_BY_NAME[role].port)),
            sink=env.get("K_SINK") or _DEFAULT_SINKS.get(role),
            command_order_url=env.get("COMMAND_ORDER_URL", _local_url("command-order")),
            query_order_url=env.get("QUERY_ORDER_URL", _local_url("query-order")),
            stats_db_url=env.get("STATS_DB_URL", _local_url("stats-order-db")),
            order_db_url=env.get("ORDER_DB_URL", _local_url("order-db")),
            database_url=env.get("DATABASE_URL", default_db),
            log_level=env.get("LOG_LEVEL", "INFO").upper(),
            request_timeout=float(env.get("REQUEST_TIMEOUT", 30.0)),
            relay_base_delay=float(env.get("RELAY_BASE_DELAY", 0.5)),
            relay_max_delay=float(env.get("RELAY_MAX_DELAY", 60.0)),
            relay_poll_interval=float(env.get("RELAY_POLL_INTERVAL", 5.0)),
            relay_enabled=env.get("RELAY_ENABLED", "1") not in ("0", "false", "no"),
        )

"""The six roles and how they are wired: the one place for their names, ports, who sends events
to whom, who calls whom by URL, and which of them keep a store."""

from __future__ import annotations

from dataclasses import dataclass

SERVICE_PREFIX = "cqrs-"
# Events per request to a sink that is a role (wired directly: every role takes CloudEvents in
# batches); a Broker gets one per request. The outbox relay claims as many rows at a time.
SINK_BATCH = 50


@dataclass(frozen=True)
class Role:
    name: str  # folder under functions/, Tekton matrix value
    port: int  # local port for `make run`; in Knative every role listens on $PORT
    # The variable other roles read this role's base URL from, if any role calls it by URL.
    url_env: str | None = None
    # The role this one sends its events to when wired directly (K_SINK), if it produces any.
    sink: str | None = None
    # The roles this one calls by URL (their `url_env`).
    peers: tuple[str, ...] = ()
    # The file stem of its SQLite store under `make run`, if it keeps one.
    store: str | None = None
    # Who may call it, by ServiceAccount (a role's is named like its Knative Service):
    # writers may change its state (any method but GET and HEAD), readers may read it.
    writers: tuple[str, ...] = ()
    readers: tuple[str, ...] = ()
    public: bool = False  # reached from outside: nothing is verified

    @property
    def service(self) -> str:
        """Knative Service name, also the image name."""
        return SERVICE_PREFIX + self.name

    @property
    def package(self) -> str:
        """Importable package inside functions/<name>/."""
        return self.name.replace("-", "_")


# Principals that are not roles: a person (kubectl create token cqrs-operator --audience
# <service>), and the direct overlay's CronJob that wakes the outbox relay.
OPERATOR = SERVICE_PREFIX + "operator"
OUTBOX_RELAY = SERVICE_PREFIX + "outbox-relay"

DISPATCHER = Role("dispatcher", 8080, peers=("command-order", "query-order"), public=True)
COMMAND_ORDER = Role(
    "command-order",
    8081,
    url_env="COMMAND_ORDER_URL",
    sink="order-db",
    writers=("cqrs-dispatcher",),
)
ORDER_DB = Role(
    "order-db",
    8082,
    url_env="ORDER_DB_URL",
    sink="process-data",
    store="orders",
    writers=("cqrs-command-order", OUTBOX_RELAY, OPERATOR),
    # process-data's replay pages through GET /orders; query-order reads GET /position
    readers=("cqrs-process-data", "cqrs-query-order", OPERATOR),
)
PROCESS_DATA = Role(
    "process-data",
    8083,
    sink="stats-order-db",
    peers=("order-db",),
    writers=("cqrs-order-db", OPERATOR),  # the relay's order.recorded; POST /replay
)
QUERY_ORDER = Role(
    "query-order",
    8084,
    url_env="QUERY_ORDER_URL",
    peers=("stats-order-db", "order-db"),
    readers=("cqrs-dispatcher",),
)
STATS_ORDER_DB = Role(
    "stats-order-db",
    8085,
    url_env="STATS_DB_URL",
    store="stats",
    writers=("cqrs-process-data",),
    readers=("cqrs-query-order", OPERATOR),
)

ROLES: tuple[Role, ...] = (
    DISPATCHER,
    COMMAND_ORDER,
    ORDER_DB,
    PROCESS_DATA,
    STATS_ORDER_DB,
    QUERY_ORDER,
)
ROLES_BY_NAME: dict[str, Role] = {role.name: role for role in ROLES}

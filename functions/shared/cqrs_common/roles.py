"""The six roles: one place for their names, packages and local ports."""

from __future__ import annotations

from dataclasses import dataclass

SERVICE_PREFIX = "cqrs-"


@dataclass(frozen=True)
class Role:
    name: str  # folder under functions/, Tekton matrix value
    port: int  # local port for `make run`; in Knative every role listens on $PORT

    @property
    def service(self) -> str:
        """Knative Service name, also the image name."""
        return SERVICE_PREFIX + self.name

    @property
    def package(self) -> str:
        """Importable package inside functions/<name>/."""
        return self.name.replace("-", "_")


DISPATCHER = Role("dispatcher", 8080)
COMMAND_ORDER = Role("command-order", 8081)
ORDER_DB = Role("order-db", 8082)
PROCESS_DATA = Role("process-data", 8083)
QUERY_ORDER = Role("query-order", 8084)
STATS_ORDER_DB = Role("stats-order-db", 8085)

ROLES: tuple[Role, ...] = (
    DISPATCHER,
    COMMAND_ORDER,
    ORDER_DB,
    PROCESS_DATA,
    STATS_ORDER_DB,
    QUERY_ORDER,
)
ROLES_BY_NAME: dict[str, Role] = {role.name: role for role in ROLES}

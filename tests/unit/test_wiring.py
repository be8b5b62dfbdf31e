"""The topology in cqrs_common.roles is the one place the wiring comes from, and a role without its
wiring stops at start naming what is missing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cqrs_common.config import ConfigError, Settings
from cqrs_common.roles import ROLES, ROLES_BY_NAME
from devtools.stack import FUNCTIONS, Stack, free_ports, wiring
from tests.support import NOWHERE


def required(role_name: str) -> list[str]:
    role = ROLES_BY_NAME[role_name]
    names = ["K_SINK"] if role.sink else []
    names += [str(ROLES_BY_NAME[peer].url_env) for peer in role.peers]
    return names + (["DATABASE_URL"] if role.store else [])


def test_the_topology_names_only_roles_and_every_called_role_has_a_url_variable() -> None:
    for role in ROLES:
        assert role.sink is None or role.sink in ROLES_BY_NAME
        for peer in role.peers:
            assert ROLES_BY_NAME[peer].url_env, f"{role.name} calls {peer}, which has no URL"
    # The chain of the contract: dispatcher -> command-order -> order-db -> process-data ->
    # stats-order-db, and the queries through query-order.
    chain = [ROLES_BY_NAME["command-order"]]
    while chain[-1].sink:
        chain.append(ROLES_BY_NAME[chain[-1].sink])
    assert [r.name for r in chain] == ["command-order", "order-db", "process-data",
                                       "stats-order-db"]  # fmt: skip
    assert ROLES_BY_NAME["dispatcher"].peers == ("command-order", "query-order")


@pytest.mark.parametrize("role", [r.name for r in ROLES])
def test_a_role_without_its_wiring_stops_naming_the_variable(role: str) -> None:
    wired = wiring(ROLES_BY_NAME[role], lambda _name: NOWHERE, "sqlite:///x.sqlite3")
    Settings.from_env(role, wired)  # all there: starts
    for name in required(role):
        for missing in ({k: v for k, v in wired.items() if k != name}, {**wired, name: " "}):
            with pytest.raises(ConfigError, match=f"set {name}"):
                Settings.from_env(role, missing)


def test_make_run_wires_every_role_from_the_topology(tmp_path) -> None:
    stack = Stack(tmp_path, ports={r.name: 9000 + i for i, r in enumerate(ROLES)})
    for role in ROLES:
        settings = Settings.from_env(role.name, stack.env_for(role.name))
        assert settings.sink == (stack.url(role.sink) if role.sink else None)
        assert dict(settings.peers) == {peer: stack.url(peer) for peer in role.peers}
        if role.store:
            assert settings.database_url.endswith(f"/{role.store}.sqlite3")


def test_a_role_under_gunicorn_without_k_sink_exits_at_once_saying_so(tmp_path) -> None:
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": f"sqlite:///{tmp_path}/orders.sqlite3",
           "PYTHONPATH": f"{FUNCTIONS / 'shared'}:{FUNCTIONS / 'order-db'}"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "python:cqrs_common.gunicorn_conf",
         "--bind", "127.0.0.1:0", "order_db:create_app()"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "set K_SINK" in result.stdout + result.stderr


def test_a_stack_on_free_ports_never_gives_two_roles_one_port() -> None:
    # One role answering on another's address once made a faults test see stats-order-db
    # where order-db should be.
    for _ in range(50):
        ports = free_ports()
        assert set(ports) == {r.name for r in ROLES}
        assert len(set(ports.values())) == len(ROLES)

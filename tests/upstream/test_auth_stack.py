"""The six roles under gunicorn with verification on, as in the cluster: tokens minted by a real
API server for each role's ServiceAccount, the key set read from it. The order flow runs end to
end; every wrong caller is refused and changes nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import requests
from cloudevents.core.bindings.http import to_binary_event

from cqrs_common import events
from cqrs_common.cloudevents_io import new_event
from cqrs_common.roles import OPERATOR, ROLES, ROLES_BY_NAME
from devtools.stack import Stack
from tests.conftest import start_stack
from tests.support import wait_for
from tests.upstream.controlplane import SERVICE_ACCOUNT_ISSUER, ControlPlane

pytestmark = pytest.mark.slow
NS = "cqrs"
ORDER = {"product": "apple", "quantity": 2, "unitPrice": "0.35"}


@pytest.fixture(scope="module")
def cp() -> Iterator[ControlPlane]:
    with ControlPlane() as plane:
        plane.kubectl("create", "namespace", NS)
        for account in [r.service for r in ROLES] + [OPERATOR]:
            plane.kubectl("create", "serviceaccount", account, "-n", NS)
        yield plane


def mint(cp: ControlPlane, account: str, audience: str | None = None) -> str:
    flags = ["--audience", audience] if audience else []
    return cp.kubectl("create", "token", account, "-n", NS, *flags).stdout.strip()


def pod_files(cp: ControlPlane, root: Path) -> dict[str, dict[str, str]]:
    """Per role what the kubelet would mount: its own API token, and one token per role it
    calls (audience = that role's Knative Service) in its token folder."""
    env = {}
    for role in ROLES:
        tokens = root / role.name / "tokens"
        tokens.mkdir(parents=True)
        for called in {*role.peers, *([role.sink] if role.sink else [])}:
            audience = ROLES_BY_NAME[called].service
            (tokens / audience).write_text(mint(cp, role.service, audience))
        (root / role.name / "token").write_text(mint(cp, role.service))
        env[role.name] = {"CQRS_AUTH_TOKEN_DIR": str(tokens),
                          "CQRS_AUTH_API_TOKEN_FILE": str(root / role.name / "token")}  # fmt: skip
    return env


@pytest.fixture(scope="module")
def shop(cp: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    assert cp.dir is not None
    root = tmp_path_factory.mktemp("auth-stack")
    checked = {
        "CQRS_AUTH": "jwt",
        "CQRS_AUTH_ISSUER": SERVICE_ACCOUNT_ISSUER,
        "CQRS_AUTH_JWKS_URL": f"{cp.url}/openid/v1/jwks",
        "CQRS_AUTH_CA_FILE": str(cp.dir / "ca.crt"),
        "CQRS_AUTH_NAMESPACE": NS,
    }
    stack = start_stack(root / "stack", extra_env=checked, role_env=pod_files(cp, root / "pods"))
    yield stack
    stack.stop()


def delta(order_id: str) -> tuple[dict[str, str], bytes]:
    data = {"orderId": order_id, "product": "pear", "quantity": 1, "unitPrice": "0.50",
            "amount": "0.50"}  # fmt: skip
    message = to_binary_event(new_event(events.STATS_DELTA, "/test", order_id, data))
    return dict(message.headers), message.body


def expired(cp: ControlPlane, account: str, audience: str) -> str:
    """What the API server issued for `account` an hour ago: signed with its own key."""
    assert cp.dir is not None
    kid = jwt.get_unverified_header(mint(cp, account, audience))["kid"]
    now = int(time.time())
    claims = {
        "iss": SERVICE_ACCOUNT_ISSUER,
        "aud": [audience],
        "iat": now - 3600,
        "nbf": now - 3600,
        "exp": now - 60,
        "sub": f"system:serviceaccount:{NS}:{account}",
    }
    key = (cp.dir / "service-account.key").read_bytes()
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})  # fmt: skip


def counted(cp: ControlPlane, stack: Stack) -> int:
    """The read store's count, read as the operator (a reader of stats-order-db)."""
    reader = {"Authorization": f"Bearer {mint(cp, OPERATOR, 'cqrs-stats-order-db')}"}
    answer = requests.get(f"{stack.url('stats-order-db')}/stats", headers=reader, timeout=5)
    return answer.json()["ordersCounted"]


def test_orders_flow_end_to_end_with_every_call_carrying_its_token(
    cp: ControlPlane, shop: Stack
) -> None:
    base = shop.url("dispatcher")
    placed = requests.post(f"{base}/api/orders", json=ORDER, timeout=10)
    assert placed.status_code == 202, placed.text
    order_id = placed.json()["orderId"]
    wait_for(lambda: requests.get(f"{base}/api/orders/{order_id}", timeout=5).json()["status"]
             == "counted")  # fmt: skip
    stats = requests.get(f"{base}/api/stats", timeout=5).json()
    assert stats["products"]["apple"] == {"quantity": 2, "totalPrice": "0.70"}
    assert stats["pipeline"] == {"ordersLogged": 1, "behind": 0, "stuck": 0}


def test_every_wrong_caller_is_refused_and_changes_nothing(cp: ControlPlane, shop: Stack) -> None:
    stats_db = shop.url("stats-order-db")
    audience = "cqrs-stats-order-db"
    before = counted(cp, shop)
    headers, body = delta("forged-1")
    wrong = {
        "no token": (None, 401),
        "not a bearer token": ("Basic b3BlcmF0b3I6eA==", 401),
        "another role's audience": (mint(cp, "cqrs-process-data", "cqrs-order-db"), 401),
        "expired": (expired(cp, "cqrs-process-data", audience), 401),
        "a reader writing": (mint(cp, "cqrs-query-order", audience), 403),
        "the public role": (mint(cp, "cqrs-dispatcher", audience), 403),
    }
    for what, (token, status) in wrong.items():
        sent = {**headers, **({"Authorization": token if " " in token else f"Bearer {token}"}
                              if token else {})}  # fmt: skip
        answer = requests.post(f"{stats_db}/", headers=sent, data=body, timeout=5)
        assert answer.status_code == status, (what, answer.text)
        assert answer.headers["Content-Type"].startswith("application/problem+json")
        if status == 401:
            assert answer.headers["WWW-Authenticate"].startswith('Bearer realm="cqrs"'), what
    assert counted(cp, shop) == before
    # The same event from the one role that may send it is taken: the refusals were the caller's.
    right = {**headers, "Authorization": f"Bearer {mint(cp, 'cqrs-process-data', audience)}"}
    assert requests.post(f"{stats_db}/", headers=right, data=body, timeout=5).status_code == 200
    assert counted(cp, shop) == before + 1


def test_the_operators_routes_need_the_operators_token(cp: ControlPlane, shop: Stack) -> None:
    replay = f"{shop.url('process-data')}/replay"
    assert requests.post(replay, timeout=10).status_code == 401
    as_order_db = {"Authorization": f"Bearer {mint(cp, 'cqrs-query-order', 'cqrs-process-data')}"}
    assert requests.post(replay, headers=as_order_db, timeout=10).status_code == 403
    operator = {"Authorization": f"Bearer {mint(cp, OPERATOR, 'cqrs-process-data')}"}
    assert requests.post(replay, headers=operator, timeout=30).status_code == 200
    retry = f"{shop.url('order-db')}/outbox/1/retry"
    as_dispatcher = {"Authorization": f"Bearer {mint(cp, 'cqrs-dispatcher', 'cqrs-order-db')}"}
    assert requests.post(retry, headers=as_dispatcher, timeout=5).status_code == 403
    # Probes and the scrape need none: kubelet and Prometheus carry no token.
    for role in ROLES:
        assert requests.get(f"{shop.url(role.name)}/readyz", timeout=5).status_code == 200
        assert requests.get(f"{shop.url(role.name)}/metrics", timeout=5).status_code == 200

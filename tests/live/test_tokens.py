"""Only the shop's roles change its state: every internal role checks the ServiceAccount token
the real kubelet projects into its caller, against the cluster's own key set.

A pod in the shop's namespace under a ServiceAccount of its own holds real tokens, one per
role's audience: each role refuses its writes with a 403 and changes nothing; a token of
another audience, or none, is a 401. The operator's ServiceAccount, which the topology lets
read, is let in: the roles accept the callers they are given (the orders of the other live
tests flow through all of them the same way)."""

from __future__ import annotations

import json
import shlex
import uuid
from datetime import UTC, datetime

from cqrs_common.roles import OPERATOR, ROLES
from tests.live.live import NAMESPACE, Live

INTRUDER = "cqrs-live-intruder"
INTERNAL = [role.service for role in ROLES if not role.public]


def _url(service: str, path: str) -> str:
    return f"http://{service}.{NAMESPACE}.svc.cluster.local{path}"


def _event(kind: str, source: str, data: dict[str, object]) -> str:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "type": f"com.example.cqrs.{kind}",
            "source": f"/cqrs/{source}",
            "subject": data["orderId"],
            "datacontenttype": "application/json",
            "data": data,
        }
    )


def writes(order_id: str) -> dict[str, tuple[str, str, str, str]]:
    """For each internal role, a write that would change the shop if it were let in: the
    method, path, content type and body its real caller would send."""
    order = {
        "orderId": order_id,
        "product": "pear",
        "quantity": 999,
        "unitPrice": "1000.00",
        "placedAt": datetime.now(UTC).isoformat(),
    }
    ce = "application/cloudevents+json"
    delta = {**order, "amount": "999000.00"}
    delta.pop("placedAt")
    return {
        "cqrs-command-order": (
            "POST", "/orders", "application/json",
            json.dumps({"product": "pear", "quantity": 999, "unitPrice": "1000.00"}),
        ),
        "cqrs-order-db": ("POST", "/", ce, _event("order.placed", "command-order", order)),
        "cqrs-process-data": (
            "POST", "/", ce, _event("order.recorded", "order-db", {**order, "sequence": 1}),
        ),
        "cqrs-stats-order-db": ("POST", "/", ce, _event("stats.delta", "process-data", delta)),
        "cqrs-query-order": ("GET", "/stats", "application/json", ""),
    }  # fmt: skip


def _curl(name: str, method: str, url: str, content_type: str, body: str, token: str) -> str:
    """A line `<name> <status>` from the pod; the token is read from its file by curl."""
    header = "Authorization: Bearer {{token}}"  # curl >= 8.3 fills it in from the file
    auth = ["--variable", f"token@/tokens/{token}", "--expand-header", header] if token else []
    argv = [
        "curl", "-sS", "-o", "/dev/null", "-w", f"{name} %{{http_code}}\\n", "--max-time", "120",
        "-X", method, "-H", f"Content-Type: {content_type}", *auth,
        *(["--data-binary", body] if body else []), url,
    ]  # fmt: skip
    return shlex.join(argv)


def _statuses(log: str) -> dict[str, int]:
    found = {}
    for line in log.splitlines():
        name, _, status = line.rpartition(" ")
        if name and status.isdigit():
            found[name] = int(status)
    return found


def test_a_pod_of_another_service_account_changes_nothing(live: Live) -> None:
    live.kubectl("-n", NAMESPACE, "create", "serviceaccount", INTRUDER, check=False)
    shop = live.shop()
    before = shop.totals()
    order_id = str(uuid.uuid4())
    calls = []
    for service, (method, path, content_type, body) in writes(order_id).items():
        url = _url(service, path)
        # its own audience: a real token, of a caller the role does not know
        calls.append(_curl(f"{service}/own", method, url, content_type, body, service))
        # a real token for another role
        other = "cqrs-dispatcher"
        calls.append(_curl(f"{service}/other", method, url, content_type, body, other))
        calls.append(_curl(f"{service}/none", method, url, content_type, body, ""))
    log = live.run_pod(
        "\n".join(calls), service_account=INTRUDER, audiences=[*INTERNAL, "cqrs-dispatcher"]
    )
    statuses = _statuses(log)
    want = {}
    for service in INTERNAL:
        want |= {f"{service}/own": 403, f"{service}/other": 401, f"{service}/none": 401}
    assert statuses == want, log
    # nothing it sent was stored or counted
    assert shop.totals() == before
    operator = _curl(
        "stored", "GET", _url("cqrs-order-db", f"/orders/{order_id}"), "application/json", "",
        "cqrs-order-db",
    )  # fmt: skip
    stats = _curl(
        "stats", "GET", _url("cqrs-stats-order-db", "/stats"), "application/json", "",
        "cqrs-stats-order-db",
    )  # fmt: skip
    position = _curl(
        "position", "GET", _url("cqrs-order-db", "/position"), "application/json", "",
        "cqrs-order-db",
    )  # fmt: skip
    assert shop.status(order_id) != "counted"
    # the operator may read: order-db and stats-order-db answer it, and know nothing of it
    log = live.run_pod(
        "\n".join([operator, stats, position]),
        service_account=OPERATOR,
        audiences=["cqrs-order-db", "cqrs-stats-order-db"],
    )
    assert _statuses(log) == {"stored": 404, "stats": 200, "position": 200}, log

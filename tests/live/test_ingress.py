"""The README's "Try it" and `make smoke` through the ingress, by the dispatcher's Host header:
under Knative's default domain, the custom domain of istio/domain, and a magic-DNS name."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.live.live import Live, added, wait_until

SMOKE = Path(__file__).resolve().parents[1] / "e2e" / "smoke.py"


@contextlib.contextmanager
def domain(live: Live, name: str | None) -> Iterator[str]:
    """config-domain holding only `name` (None: nothing, Knative's default) for the duration;
    yields the dispatcher's Host once its route has moved there."""
    config = ("-n", "knative-serving", "configmap", "config-domain")
    before = live.json("get", *config).get("data") or {}
    wanted = {name: ""} if name else {}
    patch = {k: None for k in before if k not in wanted and not k.startswith("_")} | wanted
    live.kubectl("patch", *config, "--type=merge", f"-p={json.dumps({'data': patch})}")
    host = f"cqrs-dispatcher.cqrs.{name or 'svc.cluster.local'}"
    try:
        wait_until(lambda: live.host() == host, 120, f"the dispatcher's URL at {host}")
        # the route moves first; the ingress serves the new host once it reports the KIngress
        # of this generation Ready (Traefik: when its proxy has the routes)
        wait_until(lambda: _serves(live, host), 120, f"the ingress ready for {host}")
        yield host
    finally:
        restore = {k: None for k in wanted if k not in before} | before
        live.kubectl("patch", *config, "--type=merge", f"-p={json.dumps({'data': restore})}")


def _serves(live: Live, host: str) -> bool:
    kingress = live.json("-n", "cqrs", "get", "kingress", "cqrs-dispatcher")
    hosts = {h for rule in kingress["spec"]["rules"] for h in rule["hosts"]}
    status = kingress.get("status", {})
    ready = any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
    )
    current = status.get("observedGeneration") == kingress["metadata"]["generation"]
    return host in hosts and ready and current


def test_try_it_through_the_ingress(live: Live) -> None:
    shop = live.shop()
    before = shop.totals()
    key = f"live-{uuid.uuid4()}"
    first = shop.order("apple", 3, "1.50", key=key)
    assert first.status_code == 202, first.text
    order_id = first.json()["orderId"]
    assert first.json()["status"] == "accepted"
    assert first.headers["Location"] == f"/api/orders/{order_id}"
    # a retry with the same key stores it once
    assert shop.order("apple", 3, "1.50", key=key).json()["orderId"] == order_id
    wait_until(lambda: shop.status(order_id) == "counted", 120, f"order {order_id} counted")
    form = shop.request(
        "POST", "/order", data={"product": "pear", "quantity": "2", "unitPrice": "0.50"},
        headers={"Accept": "application/json"},
    )  # fmt: skip
    assert form.status_code == 202, form.text
    want = added(before, [("apple", 3, "1.50"), ("pear", 2, "0.50")])
    wait_until(lambda: shop.totals() == want, 120, f"the totals at {want}")
    legacy = shop.request("GET", "/order/orders").json()
    assert Decimal(str(legacy["totalPriceApple"])) == want["apple"][1]
    bad = shop.request(
        "POST", "/api/orders", json={"product": "kiwi", "quantity": 0, "unitPrice": "1"}
    )
    assert bad.status_code == 400
    assert bad.headers["Content-Type"].startswith("application/problem+json")
    assert "product" in bad.text and "quantity" in bad.text
    assert shop.request("GET", "/openapi.json").status_code == 200
    assert shop.totals() == want, "the bad order changed the totals"


def _smoke(argv: list[str], base_url: str, host: str) -> None:
    done = subprocess.run(
        [*argv, sys.executable, str(SMOKE), "--base-url", base_url, "--host", host,
         "--timeout", "180"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "smoke: all checks passed" in done.stdout


@pytest.mark.parametrize("name", ["example.com", "127.0.0.1.sslip.io"], ids=["custom", "magic-dns"])
def test_make_smoke_through_the_ingress(live: Live, name: str) -> None:
    """From this machine, through the forward to the public entry points."""
    with domain(live, name) as host:
        _smoke([], f"http://{live.ingress}", host)


def test_make_smoke_under_knatives_default_domain_inside_the_cluster(live: Live) -> None:
    """With config-domain empty, Knative's default is svc.cluster.local: the dispatcher is a
    cluster-local route, served by the private entry points only, so the smoke client runs
    inside the node's network (where the cluster's Service addresses are) and goes there."""
    private = live.json("-n", "traefik", "get", "service", "privtraefik")["spec"]["clusterIP"]
    with domain(live, None) as host:
        assert live.shop(host).request("GET", "/healthz").status_code == 404  # not public
        _smoke(live.node.inside(), f"http://{private}", host)


def test_the_custom_domain_mapping_is_reconciled_into_an_ingress_rule(live: Live) -> None:
    """istio/domain's DomainMapping: Knative claims shop.example.com and asks the ingress to
    send it to the dispatcher. Routing it is the KIngress implementation's part, and Traefik's
    cannot (its Knative provider needs a backend with a ClusterIP; a DomainMapping's is the
    ExternalName Service of the route): with Istio it answers, here it is checked up to the
    KIngress (docs/cluster.md, "On this machine")."""
    mapping = live.json("-n", "cqrs", "get", "domainmapping", "shop.example.com")
    ready = {c["type"]: c["status"] for c in mapping["status"]["conditions"]}
    assert ready["Ready"] == ready["DomainClaimed"] == "True", mapping["status"]
    rule = live.json("-n", "cqrs", "get", "kingress", "shop.example.com")["spec"]["rules"][0]
    assert rule["hosts"] == ["shop.example.com"]
    assert rule["visibility"] == "ExternalIP"
    path = rule["http"]["paths"][0]
    assert path["rewriteHost"] == "cqrs-dispatcher.cqrs.svc.cluster.local"
    assert [s["serviceName"] for s in path["splits"]] == ["cqrs-dispatcher"]


def test_a_host_the_shop_does_not_have_reaches_nothing(live: Live) -> None:
    wrong = live.shop("cqrs-dispatcher.cqrs.example.org")
    assert wrong.request("GET", "/healthz").status_code == 404
    # the roles behind the dispatcher are cluster-local: not on the public entry points
    internal = live.shop("cqrs-order-db.cqrs.svc.cluster.local")
    assert internal.request("GET", "/healthz").status_code == 404

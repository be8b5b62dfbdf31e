"""The manifests give every role the identity and the tokens cqrs_common.auth expects.

Each role runs as its own ServiceAccount, holds a projected token for exactly the roles it
calls (audience = the receiving Knative Service, or the broker's), and every call the
manifests wire is one cqrs_common.auth.CALLERS allows; Eventing's deliveries are admitted
under the OIDC identities Eventing gives Triggers and PingSources.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import pytest
from test_cluster_manifests import NAMESPACE, OVERLAYS, ROOT, build, container, env, ksvcs

from cqrs_common import auth
from cqrs_common.config import DEFAULT_TOKEN_DIR
from cqrs_common.roles import ROLES, ROLES_BY_NAME

BROKER_AUDIENCE = f"eventing.knative.dev/broker/{NAMESPACE}/default"
# What each wiring variable is used for: a write (events, commands) or a read.
CALLS = {
    "K_SINK": True,
    "COMMAND_ORDER_URL": True,
    "QUERY_ORDER_URL": False,
    "STATS_DB_URL": False,
    "ORDER_DB_URL": False,
}
SERVICES = {r.service: r for r in ROLES}


def accounts(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}


def token_sources(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The projected ServiceAccount tokens mounted at DEFAULT_TOKEN_DIR, by audience."""
    containers = pod["containers"]
    mounts = [m for c in containers for m in c.get("volumeMounts", [])]
    names = {m["name"] for m in mounts if m["mountPath"] == DEFAULT_TOKEN_DIR}
    assert all(m.get("readOnly") for m in mounts if m["name"] in names)
    sources = [
        s["serviceAccountToken"]
        for v in pod.get("volumes", [])
        if v["name"] in names
        for s in v["projected"]["sources"]
    ]
    return {s["audience"]: s for s in sources}


def targets(ksvc: dict[str, Any]) -> dict[str, bool]:
    """Audience -> is-a-write, for every call the role's wiring makes."""
    found: dict[str, bool] = {}
    for name, write in CALLS.items():
        url = env(ksvc).get(name)
        if url is None:
            continue
        host = urlparse(url).hostname or ""
        audience = BROKER_AUDIENCE if host.startswith("broker-ingress.") else host.split(".")[0]
        found[audience] = found.get(audience, False) or write
    return found


def oidc_account(name: str, group: str, kind: str) -> str:
    """Eventing's OIDC ServiceAccount of a Trigger or PingSource: <name>-oidc-<group>-<kind>,
    lower-cased, hashed only beyond 63 characters (eventing pkg/auth/serviceaccount.go,
    knative.dev/pkg kmeta/names.go ChildName)."""
    sa = f"{name}-oidc-{group}-{kind}".lower()
    assert len(sa) <= 63, f"{sa}: Eventing would hash this name; list the hashed one"
    return sa


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_role_runs_as_its_own_service_account(overlay: str) -> None:
    docs = build(f"knative/overlays/{overlay}")
    sas = accounts(docs)
    for name, ksvc in ksvcs(docs).items():
        role = SERVICES[name]
        assert ksvc["spec"]["template"]["spec"]["serviceAccountName"] == role.service
        # only a role that verifies reads the JWKS with the pod's own API token
        verifies = role.name in auth.CALLERS
        assert sas[role.service]["automountServiceAccountToken"] is verifies, name
        assert sas[role.service]["imagePullSecrets"] == [{"name": "cqrs-registry"}]
    assert sas[auth.OPERATOR]["automountServiceAccountToken"] is False
    named = {sa for c in auth.CALLERS.values() for sa in c.writes | c.reads}
    relay = {auth.OUTBOX_RELAY} if overlay == "eventing" else set()  # a PingSource there
    assert named - relay <= set(sas)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_role_holds_a_token_for_exactly_the_roles_it_calls(overlay: str) -> None:
    for name, ksvc in ksvcs(build(f"knative/overlays/{overlay}")).items():
        pod = ksvc["spec"]["template"]["spec"]
        tokens = token_sources(pod)
        calls = targets(ksvc)
        assert set(tokens) == set(calls), name
        for audience, source in tokens.items():
            # TokenSource reads <dir>/<audience>; the kubelet renews at 80% of an hour
            assert source["path"] == audience
            assert source["expirationSeconds"] == 3600
        if "K_SINK" in env(ksvc):
            assert env(ksvc)["K_SINK_AUDIENCE"] in tokens, name
        # every call the wiring makes is one the receiver admits
        for audience, write in calls.items():
            if audience == BROKER_AUDIENCE:
                continue  # Eventing's broker ingress checks it, then delivers as the Trigger
            callers = auth.CALLERS[SERVICES[audience].name]
            assert name in (callers.writes if write else callers.reads), (name, audience)


def test_auth_is_on_everywhere_with_the_issuer_in_one_place() -> None:
    docs = build("knative/base")
    (config,) = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "cqrs-auth"
    ]
    settings = auth.AuthSettings.from_env({**config["data"], "CQRS_AUTH_NAMESPACE": NAMESPACE})
    assert settings.enabled and settings.issuer.startswith("https://")
    for name, ksvc in ksvcs(docs).items():
        assert {"configMapRef": {"name": "cqrs-auth"}} in container(ksvc)["envFrom"], name
        assert not {"CQRS_AUTH", "CQRS_AUTH_ISSUER"} & set(env(ksvc)), name
    holders = [
        p.relative_to(ROOT).as_posix()
        for folder in ("knative", "istio")
        for p in (ROOT / folder).rglob("*.yaml")
        if settings.issuer in p.read_text(encoding="utf-8")
    ]
    assert holders == ["knative/base/auth.yaml"]


def test_the_outbox_relay_cronjob_sends_its_own_token() -> None:
    docs = build("knative/overlays/direct")
    (cron,) = [d for d in docs if d["kind"] == "CronJob"]
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == auth.OUTBOX_RELAY
    assert accounts(docs)[auth.OUTBOX_RELAY]["automountServiceAccountToken"] is False
    order_db = ROLES_BY_NAME["order-db"].service
    assert set(token_sources(pod)) == {order_db}
    (c,) = pod["containers"]
    assert c["args"][c["args"].index("--variable") + 1] == (f"token@{DEFAULT_TOKEN_DIR}/{order_db}")
    # only --expand-header substitutes {{token}}; --header would send it literally
    assert c["args"][c["args"].index("--expand-header") + 1] == (
        "Authorization: Bearer {{token:trim}}"
    )
    assert auth.OUTBOX_RELAY in auth.CALLERS["order-db"].writes


def test_eventing_deliveries_are_admitted_under_their_oidc_identities() -> None:
    docs = build("knative/overlays/eventing")
    expected: dict[str, set[str]] = {}
    for d in docs:
        if d["kind"] == "Trigger":
            dest, group = d["spec"]["subscriber"], "eventing.knative.dev"
        elif d["kind"] == "PingSource":
            dest, group = d["spec"]["sink"], "sources.knative.dev"
        else:
            continue
        target = dest["ref"]["name"]
        # Knative Serving publishes no audience: the Destination names the one we verify
        assert dest["audience"] == target
        sa = oidc_account(d["metadata"]["name"], group, d["kind"])
        expected.setdefault(target, set()).add(auth.subject(NAMESPACE, sa))
    assert set(expected) == {f"cqrs-{r}" for r in ("order-db", "process-data", "stats-order-db")}
    for name, ksvc in ksvcs(docs).items():
        given = env(ksvc).get("CQRS_AUTH_EXTRA_CALLERS")
        settings = auth.AuthSettings.from_env(
            {"CQRS_AUTH_EXTRA_CALLERS": given or "", "CQRS_AUTH_NAMESPACE": NAMESPACE}
        )
        assert settings.extra_callers == expected.get(name, set()), name
    # the direct overlay admits no Eventing identity
    for ksvc in ksvcs(build("knative/overlays/direct")).values():
        assert "CQRS_AUTH_EXTRA_CALLERS" not in env(ksvc)

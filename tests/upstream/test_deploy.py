"""`make deploy` for real, against a real API server with the upstream CRDs.

On a cluster with Knative Serving but no Eventing (the documented default path) and on one
with Eventing, for each database choice: the deploy succeeds, the server keeps every field
it was given (nothing pruned or refused), a second deploy changes nothing, and a missing
prerequisite stops it before it changes anything.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest
import yaml

from tests.upstream.controlplane import ControlPlane
from tests.upstream.documents import REGISTRY, ROOT, TAG, deploy_dry_run
from tests.upstream.standin import NAMESPACE, StandInControllers

pytestmark = pytest.mark.slow

DB_SECRETS = {
    "cnpg": [],  # CloudNativePG creates them (the stand-in does here)
    "single": ["cqrs-postgres", "cqrs-orders-app", "cqrs-stats-app"],
    "none": ["cqrs-orders-app", "cqrs-stats-app"],
}


def kube_env(cp: ControlPlane) -> dict[str, str]:
    assert cp.dir is not None
    return {
        **os.environ,
        "KUBECONFIG": str(cp.kubeconfig),
        # kubectl's discovery cache, per server: a port reused by a later server with other
        # CRDs must not see a stale one
        "KUBECACHEDIR": str(cp.dir / "kubectl-cache"),
    }


def make_deploy(cp: ControlPlane, overlay: str, database: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "-s", "-C", str(ROOT), "deploy", f"REGISTRY={REGISTRY}", f"TAG={TAG}",
         f"OVERLAY={overlay}", f"DATABASE={database}"],
        env={**kube_env(cp), "DEPLOY_TIMEOUT": "60s"},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def install_knative(cp: ControlPlane, *, eventing: bool) -> None:
    """The namespaces Knative's install creates (its CRDs are already there), and Eventing's
    OIDC authentication turned on as docs/cluster.md, step 4 has the operator do."""
    for ns in ["knative-serving", *(["knative-eventing"] if eventing else [])]:
        cp.kubectl("create", "namespace", ns, check=False)
    if eventing:
        set_eventing_oidc(cp, "enabled")


def set_eventing_oidc(cp: ControlPlane, value: str) -> None:
    features = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "config-features", "namespace": "knative-eventing"},
        "data": {"authentication-oidc": value},
    }  # fmt: skip
    cp.kubectl("apply", "-f", "-", input=json.dumps(features))


def create_secrets(cp: ControlPlane, names: list[str]) -> None:
    """As docs/cluster.md has the user create them."""
    cp.kubectl("apply", "-f", str(ROOT / "knative" / "namespace" / "namespace.yaml"))
    for name in names:
        secret = {
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "stringData": {"uri": "postgresql://cqrs:pw@db.example:5432/x", "password": "pw"},
        }  # fmt: skip
        cp.kubectl("apply", "-f", "-", input=json.dumps(secret))


def live(cp: ControlPlane, text: str) -> list[dict[str, Any]]:
    """The server's copy of every object in the stream (fails if any is missing)."""
    out = cp.kubectl("get", "-f", "-", "-o", "json", input=text)
    data = json.loads(out.stdout)
    return data["items"] if data.get("kind") == "List" else [data]


def missing_fields(given: Any, stored: Any, path: str = "") -> list[str]:
    """Where the stored object lacks or changed what was given (pruned or rewritten)."""
    if isinstance(given, dict):
        if not isinstance(stored, dict):
            return [path or "/"]
        return [
            m for k, v in given.items() for m in missing_fields(v, stored.get(k), f"{path}/{k}")
        ]
    if isinstance(given, list):
        if not isinstance(stored, list) or len(stored) != len(given):
            return [path]
        return [m for i, (g, s) in enumerate(zip(given, stored, strict=True))
                for m in missing_fields(g, s, f"{path}/{i}")]  # fmt: skip
    if given != stored and str(given) != str(stored):
        return [f"{path}: {given!r} -> {stored!r}"]
    return []


def check_deploy(cp: ControlPlane, overlay: str, database: str) -> None:
    applied = deploy_dry_run(overlay, database)
    with StandInControllers(cp):
        first = make_deploy(cp, overlay, database)
    assert first.returncode == 0, first.stdout + first.stderr
    docs = [d for d in yaml.safe_load_all(applied) if d]
    stored = live(cp, applied)
    assert len(stored) == len(docs)
    problems = [
        f"{doc['kind']}/{doc['metadata']['name']}{m}"
        for doc, obj in zip(docs, stored, strict=True)
        for m in missing_fields({k: v for k, v in doc.items() if k != "status"}, obj)
    ]
    assert problems == []
    versions = {o["metadata"]["uid"]: o["metadata"]["resourceVersion"] for o in stored}
    with StandInControllers(cp) as standin:
        second = make_deploy(cp, overlay, database)
    assert second.returncode == 0, second.stdout + second.stderr
    assert standin.made_ready == []
    again = {o["metadata"]["uid"]: o["metadata"]["resourceVersion"] for o in live(cp, applied)}
    assert again == versions, "a second make deploy changed objects"
    # (kubectl may still say "configured": a JSON merge patch resends whole lists, which the
    # server finds equal and does not store; the resourceVersions above are what counts)
    assert " created" not in second.stdout


def shop_objects(cp: ControlPlane) -> str:
    kinds = "ksvc,cronjobs,serviceaccounts,clusters.postgresql.cnpg.io,statefulsets"
    return cp.kubectl("get", kinds, "-n", NAMESPACE, "-o", "name", check=False).stdout


@pytest.fixture(scope="module")
def serving(serving_cluster: ControlPlane) -> ControlPlane:
    install_knative(serving_cluster, eventing=False)
    return serving_cluster


@pytest.fixture(scope="module")
def eventing(eventing_cluster: ControlPlane) -> ControlPlane:
    install_knative(eventing_cluster, eventing=True)
    return eventing_cluster


@pytest.mark.parametrize("database", ["cnpg", "single", "none"])
def test_direct_overlay_on_serving_without_eventing(serving: ControlPlane, database: str) -> None:
    create_secrets(serving, DB_SECRETS[database])
    check_deploy(serving, "direct", database)


def test_eventing_overlay_without_eventing_stops_before_changing_anything(
    serving: ControlPlane,
) -> None:
    before = shop_objects(serving)
    result = make_deploy(serving, "eventing", "cnpg")
    assert result.returncode == 2
    assert "needs Knative Eventing" in result.stderr
    assert shop_objects(serving) == before


@pytest.mark.parametrize("database", ["cnpg", "single", "none"])
def test_eventing_overlay_on_eventing(eventing: ControlPlane, database: str) -> None:
    create_secrets(eventing, DB_SECRETS[database])
    check_deploy(eventing, "eventing", database)


def test_eventing_overlay_without_oidc_stops_before_changing_anything(
    eventing: ControlPlane,
) -> None:
    # deliveries would come without tokens and every role would refuse them
    set_eventing_oidc(eventing, "disabled")
    try:
        before = shop_objects(eventing)
        result = make_deploy(eventing, "eventing", "cnpg")
        assert result.returncode == 2
        assert "authentication-oidc" in result.stderr
        assert shop_objects(eventing) == before
    finally:
        set_eventing_oidc(eventing, "enabled")


def test_missing_database_secrets_stop_the_deploy(eventing: ControlPlane) -> None:
    eventing.kubectl("delete", "secret", "cqrs-postgres", "-n", NAMESPACE, "--ignore-not-found")
    before = shop_objects(eventing)
    result = make_deploy(eventing, "eventing", "single")
    assert result.returncode == 2
    assert "needs the Secrets cqrs-postgres" in result.stderr
    assert shop_objects(eventing) == before


BROKEN = [
    # (what is broken, the document's kind, how)
    ("unknown field in a Knative Service", "Service",
     lambda d: d["spec"]["template"]["spec"].update(containerConcurency=8)),
    ("a CloudNativePG Cluster of no instances", "Cluster",
     lambda d: d["spec"].update(instances=0)),
    ("an AuthorizationPolicy action that does not exist", "AuthorizationPolicy",
     lambda d: d["spec"].update(action="PERMIT")),
]  # fmt: skip


@pytest.mark.parametrize(("what", "kind", "mutate"), BROKEN, ids=[b[0] for b in BROKEN])
def test_the_server_refuses_a_broken_document(
    serving: ControlPlane, what: str, kind: str, mutate: Any
) -> None:
    doc = next(
        d for d in yaml.safe_load_all(deploy_dry_run("direct", "cnpg")) if d and d["kind"] == kind
    )
    ok = serving.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(doc))
    assert ok.returncode == 0
    mutate(doc)
    refused = serving.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=json.dumps(doc), check=False
    )
    assert refused.returncode != 0, f"the API server took {what}"


def test_the_monitoring_kustomization_is_accepted_with_the_prometheus_operators_crd(
    serving: ControlPlane,
) -> None:
    """knative/monitoring (PodMonitor, dashboard ConfigMap) for a cluster with the Prometheus
    operator: the API server checks it against the operator's own CRD."""
    built = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "knative" / "monitoring")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    docs = [d for d in yaml.safe_load_all(built) if d]
    assert {d["kind"] for d in docs} >= {"PodMonitor", "ConfigMap"}
    serving.kubectl("create", "namespace", "monitoring-check", check=False)
    for doc in docs:
        doc["metadata"]["namespace"] = "monitoring-check"
        ok = serving.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(doc))
        assert ok.returncode == 0
    (monitor,) = [d for d in docs if d["kind"] == "PodMonitor"]
    monitor["spec"]["podMetricsEndpoints"][0]["scheme"] = "gopher"  # not http or https
    refused = serving.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=json.dumps(monitor), check=False
    )
    assert refused.returncode != 0, "the API server took a PodMonitor with a bad scheme"

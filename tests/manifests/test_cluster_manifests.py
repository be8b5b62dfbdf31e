"""knative/ and istio/ agree with the schemas, with the code and with docs/cluster.md."""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from validate import kustomize_build, validate_document

from cqrs_common import events
from cqrs_common.config import Settings
from cqrs_common.limits import WORKER_THREADS
from cqrs_common.roles import ROLES, ROLES_BY_NAME, SINK_BATCH

ROOT = Path(__file__).resolve().parents[2]
KNATIVE = ROOT / "knative"
ISTIO = ROOT / "istio"
DOCS = ROOT / "docs" / "cluster.md"
NAMESPACE = "cqrs"
OVERLAYS = ("direct", "eventing")


def _kind(kustomization: Path) -> str:
    return yaml.safe_load(kustomization.read_text(encoding="utf-8")).get("kind", "Kustomization")


_ALL = sorted([*KNATIVE.rglob("kustomization.yaml"), *ISTIO.rglob("kustomization.yaml")])
KUSTOMIZATIONS = [p.parent for p in _ALL if _kind(p) != "Component"]
# Components render nothing alone: they are built into an overlay that names them.
COMPONENTS = [p.parent for p in _ALL if _kind(p) == "Component"]
# Checked elsewhere: by hand below, and against the upstream CRD by a real API server
# (tests/upstream/test_deploy.py).
HAND_CHECKED = {("postgresql.cnpg.io/v1", "Cluster"), ("monitoring.coreos.com/v1", "PodMonitor")}
# The contract's event flow: producer -> (event type) -> consumer.
FLOW = {
    "command-order": (events.ORDER_PLACED, "order-db"),
    "order-db": (events.ORDER_RECORDED, "process-data"),
    "process-data": (events.STATS_DELTA, "stats-order-db"),
}
BROKER_INGRESS = "http://broker-ingress.knative-eventing.svc.cluster.local/{ns}/{name}"


def local_url(role: str) -> str:
    return f"http://cqrs-{role}.{NAMESPACE}.svc.cluster.local"


def build(rel: str) -> list[dict[str, Any]]:
    return kustomize_build(ROOT / rel)


def ksvcs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["name"]: d
        for d in docs
        if d["apiVersion"] == "serving.knative.dev/v1" and d["kind"] == "Service"
    }


def container(ksvc: dict[str, Any]) -> dict[str, Any]:
    (c,) = ksvc["spec"]["template"]["spec"]["containers"]
    return c


def env(ksvc: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(ksvc).get("env", [])}


def kind_kebab(kind: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", kind).lower()


def all_yaml_docs() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in sorted([*KNATIVE.rglob("*.yaml"), *ISTIO.rglob("*.yaml")]):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                out.append((path, doc))
    return out


# --- every kustomization builds and every document is valid ------------------------------


def test_the_expected_kustomizations_exist() -> None:
    rel = {str(p.relative_to(ROOT)) for p in KUSTOMIZATIONS}
    assert {
        "knative/base",
        "knative/namespace",
        "knative/overlays/direct",
        "knative/overlays/eventing",
        "knative/postgres/cnpg",
        "knative/postgres/single",
        "istio/base",
        "istio/eventing",
        "istio/domain",
    } <= rel


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(ROOT)))
def test_kustomization_builds_and_every_document_is_valid(path: Path) -> None:
    docs = kustomize_build(path)
    assert docs, f"{path} renders nothing"
    errors = []
    for doc in docs:
        if (doc.get("apiVersion"), doc.get("kind")) in HAND_CHECKED:
            continue
        errors += validate_document(doc)
    assert errors == []


def test_every_yaml_file_is_in_a_kustomization_or_read_by_istioctl() -> None:
    listed: set[Path] = set()
    for k in KUSTOMIZATIONS + COMPONENTS:
        data = yaml.safe_load((k / "kustomization.yaml").read_text(encoding="utf-8"))
        listed |= {(k / r).resolve() for r in data.get("resources", [])}
        listed |= {(k / p["path"]).resolve() for p in data.get("patches", []) if "path" in p}
    loose = [
        p.relative_to(ROOT)
        for p in [*KNATIVE.rglob("*.yaml"), *ISTIO.rglob("*.yaml")]
        if p.name != "kustomization.yaml" and p.resolve() not in listed
    ]
    assert [str(p) for p in loose] == ["istio/istio-operator-knative-minimal.yaml"]


# --- roles, images, ports ------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_one_knative_service_per_role_with_its_image(overlay: str) -> None:
    services = ksvcs(build(f"knative/overlays/{overlay}"))
    assert set(services) == {r.service for r in ROLES}
    for role in ROLES:
        ksvc = services[role.service]
        assert ksvc["metadata"]["namespace"] == NAMESPACE
        assert container(ksvc)["image"].split(":")[0] == role.service
        assert (ROOT / "functions" / role.name / role.package / "__init__.py").is_file()
        labels = ksvc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == role.service
        assert labels["app.kubernetes.io/part-of"] == "cqrs-ordering"


def test_only_the_dispatcher_is_public() -> None:
    for name, ksvc in ksvcs(build("knative/base")).items():
        visibility = ksvc["metadata"]["labels"].get("networking.knative.dev/visibility")
        assert visibility == (None if name == "cqrs-dispatcher" else "cluster-local"), name


def test_ports_probes_resources_and_security() -> None:
    for name, ksvc in ksvcs(build("knative/base")).items():
        c = container(ksvc)
        assert c["ports"] == [{"name": "http1", "containerPort": 8080}], name
        assert "PORT" not in env(ksvc), f"{name}: Knative sets PORT, never by hand"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert {"cpu", "memory"} <= set(c["resources"]["requests"])
        assert "memory" in c["resources"]["limits"]
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert sc["seccompProfile"]["type"] == "RuntimeDefault"
        assert ksvc["spec"]["template"]["spec"]["serviceAccountName"] == name


def test_autoscaling_matches_gunicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    """containerConcurrency is what gunicorn serves at once as the image runs it: no variable
    set, its config's workers x cqrs_common.limits.WORKER_THREADS."""
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    monkeypatch.delenv("GUNICORN_THREADS", raising=False)
    conf = importlib.reload(importlib.import_module("cqrs_common.gunicorn_conf"))
    workers, threads = conf.workers, conf.threads
    assert threads == WORKER_THREADS
    dockerfile = (ROOT / "functions" / "Dockerfile").read_text(encoding="utf-8")
    assert "GUNICORN_THREADS" not in dockerfile and "WEB_CONCURRENCY" not in dockerfile
    for name, ksvc in ksvcs(build("knative/base")).items():
        tmpl = ksvc["spec"]["template"]
        ann = tmpl["metadata"]["annotations"]
        assert ann["autoscaling.knative.dev/min-scale"] == "0", name
        max_scale = int(ann["autoscaling.knative.dev/max-scale"])
        assert 1 < max_scale <= 10, f"{name}: the stores can scale out, within limits"
        assert tmpl["spec"]["containerConcurrency"] == workers * threads, name
        assert 0 < int(ann["autoscaling.knative.dev/target"]) <= workers * threads, name


def test_annotations_use_current_spellings() -> None:
    legacy = re.compile(r"autoscaling\.knative\.dev/[a-z]+[A-Z]|serving\.knative\.dev/visibility")
    for path in [*KNATIVE.rglob("*.yaml"), *ISTIO.rglob("*.yaml")]:
        found = legacy.findall(path.read_text(encoding="utf-8"))
        assert not found, f"{path.relative_to(ROOT)}: legacy spelling {found}"


def test_no_latest_and_every_image_is_tagged() -> None:
    for path, doc in all_yaml_docs():
        for image in re.findall(r"image: *(\S+)", yaml.safe_dump(doc)):
            assert ":" in image.split("/")[-1] or "@sha256:" in image, f"{path}: {image}"
            assert not image.endswith(":latest"), f"{path}: {image}"


def test_images_are_overridable_by_kustomize(tmp_path: Path) -> None:
    digest = "sha256:" + "a" * 64
    overlay = os.path.relpath(KNATIVE / "overlays" / "direct", tmp_path)
    images = "".join(
        f"  - name: {r.service}\n    newName: registry.test/me/{r.service}\n    digest: {digest}\n"
        for r in ROLES
    )
    (tmp_path / "kustomization.yaml").write_text(
        f"resources:\n  - {overlay}\nimages:\n{images}", encoding="utf-8"
    )
    for name, ksvc in ksvcs(kustomize_build(tmp_path)).items():
        assert container(ksvc)["image"] == f"registry.test/me/{name}@{digest}"


# --- wiring: K_SINK, role URLs, secrets ----------------------------------------------------


def test_direct_k_sink_chain_follows_the_contract() -> None:
    services = ksvcs(build("knative/overlays/direct"))
    for role in ROLES:
        sink = env(services[role.service]).get("K_SINK")
        assert sink == (local_url(role.sink) if role.sink else None), role.name


def settings_of(role: str, wired: dict[str, Any]) -> Settings:
    """What the role reads from its container's environment (a Secret's value stands in)."""
    given = {k: v if isinstance(v, str) else "from-a-secret" for k, v in wired.items()}
    return Settings.from_env(role, given)


@pytest.mark.parametrize("overlay", ["direct", "eventing"])
def test_every_role_gets_the_wiring_it_cannot_start_without(overlay: str) -> None:
    # cqrs_common.roles is the topology; a role missing a variable stops at start (ConfigError).
    services = ksvcs(build(f"knative/overlays/{overlay}"))
    for role in ROLES:
        wired = env(services[role.service])
        for peer in role.peers:
            assert wired.get(ROLES_BY_NAME[peer].url_env) == local_url(peer), (role.name, peer)
        settings_of(role.name, wired)  # raises ConfigError naming what is missing


@pytest.mark.parametrize(("overlay", "size"), [("direct", SINK_BATCH), ("eventing", 1)])
def test_events_are_batched_only_to_a_role(overlay: str, size: int) -> None:
    # Every role takes batches; a Broker takes one event per request. order-db's relay and
    # process-data are the producers that ever have several events ready at once.
    services = ksvcs(build(f"knative/overlays/{overlay}"))
    for role in ROLES:
        settings = settings_of(role.name, env(services[role.service]))
        expected = size if role.name in ("order-db", "process-data") else 1
        assert settings.sink_batch_size == expected, (overlay, role.name)


def test_eventing_producers_send_to_the_broker_and_triggers_route_by_contract() -> None:
    docs = build("knative/overlays/eventing")
    brokers = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Broker"}
    triggers = [d for d in docs if d["kind"] == "Trigger"]
    services = ksvcs(docs)
    for role in ROLES:
        sink = env(services[role.service]).get("K_SINK")
        if role.name in FLOW:
            assert sink == BROKER_INGRESS.format(ns=NAMESPACE, name="default"), role.name
        else:
            assert sink is None, role.name
    assert "default" in brokers
    routes = {
        (t["spec"]["filter"]["attributes"]["type"], t["spec"]["subscriber"]["ref"]["name"])
        for t in triggers
    }
    assert routes == {(etype, f"cqrs-{consumer}") for etype, consumer in FLOW.values()}
    assert {t["spec"]["filter"]["attributes"]["type"] for t in triggers} == set(events.EVENT_TYPES)
    for t in triggers:
        etype = t["spec"]["filter"]["attributes"]["type"]
        subscriber = t["spec"]["subscriber"]["ref"]["name"].removeprefix("cqrs-")
        suffix = etype.removeprefix(events.PREFIX).replace(".", "-")
        assert t["metadata"]["name"] == f"{subscriber}-{suffix}"
        assert t["spec"]["broker"] == "default"
        delivery = t["spec"]["delivery"]
        assert delivery["retry"] >= 3 and delivery["backoffPolicy"] == "exponential"
        assert delivery["deadLetterSink"]["ref"]["name"] in brokers


def test_outbox_relay_while_scaled_to_zero() -> None:
    (ping,) = [d for d in build("knative/overlays/eventing") if d["kind"] == "PingSource"]
    assert ping["spec"]["sink"]["ref"] == {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "name": ROLES_BY_NAME["order-db"].service,
    }
    (cron,) = [d for d in build("knative/overlays/direct") if d["kind"] == "CronJob"]
    (c,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert c["args"][-1] == local_url("order-db") + "/outbox/relay"
    assert c["args"][c["args"].index("--request") + 1] == "POST"
    assert not any(d["kind"] == "CronJob" for d in build("knative/overlays/eventing"))


def test_stores_read_database_url_from_a_secret() -> None:
    services = ksvcs(build("knative/base"))
    secrets = {}
    for role in ("order-db", "stats-order-db"):
        ref = env(services[f"cqrs-{role}"])["DATABASE_URL"]["secretKeyRef"]
        secrets[role] = ref["name"]
        assert ref["key"] == "uri"
    assert secrets["order-db"] != secrets["stats-order-db"], "separate databases"
    # CloudNativePG names its app secret <cluster>-app: both options provide the same names
    clusters = {d["metadata"]["name"] + "-app" for d in build("knative/postgres/cnpg")}
    assert clusters == set(secrets.values())


def test_every_secret_referenced_is_documented() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    text = "\n".join(yaml.safe_dump(d) for _, d in all_yaml_docs())
    names = set(re.findall(r"secretKeyRef:\n\s+key: \S+\n\s+name: (\S+)", text))
    names |= set(re.findall(r"imagePullSecrets:\n- name: (\S+)", text))
    assert {"cqrs-orders-app", "cqrs-stats-app", "cqrs-postgres", "cqrs-registry"} <= names
    for name in names:
        assert re.search(rf"create secret \S+ {name}\b", docs), f"{name} not in docs/cluster.md"


def test_postgresql_cnpg_clusters_by_hand() -> None:
    clusters = build("knative/postgres/cnpg")
    assert {c["metadata"]["name"] for c in clusters} == {"cqrs-orders", "cqrs-stats"}
    databases = set()
    for c in clusters:
        assert set(c) == {"apiVersion", "kind", "metadata", "spec"}
        assert (c["apiVersion"], c["kind"]) == ("postgresql.cnpg.io/v1", "Cluster")
        assert c["metadata"]["namespace"] == NAMESPACE
        spec = c["spec"]
        assert isinstance(spec["instances"], int) and spec["instances"] >= 1
        assert set(spec["bootstrap"]) == {"initdb"}
        initdb = spec["bootstrap"]["initdb"]
        assert set(initdb) == {"database", "owner"}
        databases.add(initdb["database"])
        assert re.fullmatch(r"\d+[GM]i", spec["storage"]["size"])
        allowed = {"instances", "bootstrap", "storage", "inheritedMetadata", "resources"}
        assert set(spec) <= allowed, set(spec) - allowed
    assert databases == {"orders", "stats"}


def test_single_instance_postgresql_holds_both_databases() -> None:
    docs = build("knative/postgres/single")
    (sts,) = [d for d in docs if d["kind"] == "StatefulSet"]
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    env_ = {e["name"]: e for e in c["env"]}
    assert env_["POSTGRES_DB"]["value"] == "orders"
    assert env_["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "cqrs-postgres"
    assert "CREATE DATABASE stats" in "".join(cm["data"].values())
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"


# --- Istio ---------------------------------------------------------------------------------


def test_istio_files_are_named_kind_target_variant() -> None:
    for path in ISTIO.rglob("*.yaml"):
        if path.name == "kustomization.yaml":
            continue
        (doc,) = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        prefix = kind_kebab(doc["kind"]) + "-"
        assert path.name.startswith(prefix), path.name
        target_variant = path.stem.removeprefix(prefix).split("-")
        assert len(target_variant) >= 2, f"{path.name}: <kind>-<target>-<variant>.yaml"


def test_istio_operator_profile_for_knative() -> None:
    doc = yaml.safe_load((ISTIO / "istio-operator-knative-minimal.yaml").read_text("utf-8"))
    assert (doc["apiVersion"], doc["kind"]) == ("install.istio.io/v1alpha1", "IstioOperator")
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
    spec = doc["spec"]
    assert spec["profile"] == "minimal"
    assert set(spec) <= {"profile", "components", "meshConfig", "values"}
    gateways = {g["name"]: g for g in spec["components"]["ingressGateways"]}
    assert gateways["istio-ingressgateway"]["enabled"] is True


def test_mesh_policy() -> None:
    docs = build("istio/base")
    peers = {
        d["metadata"]["namespace"]: d["spec"]["mtls"]["mode"]
        for d in docs
        if d["kind"] == "PeerAuthentication"
    }
    # knative-eventing exists only with Eventing: its policy is istio/eventing, applied with
    # the eventing overlay, so the default path (Serving only) never names a missing namespace
    assert peers == {NAMESPACE: "STRICT", "knative-serving": "PERMISSIVE"}
    (eventing,) = build("istio/eventing")
    assert (eventing["metadata"]["namespace"], eventing["spec"]["mtls"]["mode"]) == (
        "knative-eventing",
        "PERMISSIVE",
    )
    policies = {
        d["spec"]["selector"]["matchLabels"]["serving.knative.dev/service"]: d
        for d in docs
        if d["kind"] == "AuthorizationPolicy"
    }
    assert set(policies) == {r.service for r in ROLES}
    ingress = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
    mesh = {NAMESPACE, "knative-serving", "knative-eventing"}
    probes = ["/healthz", "/readyz", "/metrics"]
    for name, policy in policies.items():
        assert policy["metadata"]["namespace"] == NAMESPACE
        assert policy["spec"]["action"] == "ALLOW"
        rules = policy["spec"]["rules"]
        sources = [s["source"] for rule in rules for s in rule["from"]]
        principals = {p for s in sources for p in s.get("principals", [])}
        namespaces = {n for s in sources for n in s.get("namespaces", [])}
        if name == "cqrs-dispatcher":
            assert principals == {ingress} and namespaces == {"knative-serving"}
            continue
        # the activator forwards any caller as itself: the role verifies the token
        # (cqrs_common.auth); the mesh admits only probes, and requests that carry one
        assert principals == set()
        for rule in rules:
            assert {n for s in rule["from"] for n in s["source"]["namespaces"]} == mesh
        probe_rule, token_rule = rules
        assert probe_rule["to"] == [{"operation": {"paths": probes}}]
        assert "when" not in probe_rule
        assert "to" not in token_rule
        assert token_rule["when"] == [
            {"key": "request.headers[authorization]", "values": ["Bearer *"]}
        ]


def test_custom_domain() -> None:
    docs = build("istio/domain")
    maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    assert maps["config-network"]["data"] == {"autocreate-cluster-domain-claims": "true"}
    cm = maps["config-domain"]
    (dm,) = [d for d in docs if d["kind"] == "DomainMapping"]
    assert (cm["metadata"]["name"], cm["metadata"]["namespace"]) == (
        "config-domain",
        "knative-serving",
    )
    (domain,) = cm["data"]
    assert dm["metadata"]["name"] == f"shop.{domain}"
    assert dm["metadata"]["namespace"] == NAMESPACE
    assert dm["spec"]["ref"]["name"] == ROLES_BY_NAME["dispatcher"].service


def test_namespace_injects_sidecars() -> None:
    (ns,) = build("knative/namespace")
    assert ns["metadata"]["name"] == NAMESPACE
    assert ns["metadata"]["labels"]["istio-injection"] == "enabled"


def test_yaml_is_lint_clean() -> None:
    from yamllint import config, linter

    conf = config.YamlLintConfig(
        "{extends: default, rules: {line-length: {max: 100}, document-start: disable,"
        " truthy: {check-keys: false}}}"
    )
    problems = [
        f"{path.relative_to(ROOT)}:{p.line}: {p.message}"
        for path in sorted([*KNATIVE.rglob("*.yaml"), *ISTIO.rglob("*.yaml")])
        for p in linter.run(path.read_text(encoding="utf-8"), conf)
    ]
    assert problems == []

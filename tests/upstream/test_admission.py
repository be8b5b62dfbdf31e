"""What the admission webhooks of Knative, Tekton, Istio and CloudNativePG would say.

Every document that `make deploy` (each overlay and database), `kubectl apply -k tekton`,
`make pipeline`, the pipeline's deploy step and the custom-domain guide apply goes through
the upstream projects' own defaulting and validation (tools/upstream/validate-*), with the
configuration the docs give the cluster. Each kind of check is shown to refuse a broken
document too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.upstream import documents, validators
from tests.upstream.documents import DocumentSet

pytestmark = pytest.mark.slow

# The groups whose documents an upstream validator must have accepted.
UPSTREAM_GROUPS = {
    "serving.knative.dev": "knative",
    "eventing.knative.dev": "knative",
    "sources.knative.dev": "knative",
    "tekton.dev": "tekton",
    "triggers.tekton.dev": "tekton",
    "security.istio.io": "istio",
    "networking.istio.io": "istio",
    "postgresql.cnpg.io": "cnpg",
    "install.istio.io": "istio",
}


@functools.cache
def sets() -> dict[str, DocumentSet]:
    return {s.name: s for s in documents.all_sets()}


# docs/cluster.md, step 4: Eventing's deliveries carry OIDC tokens (make deploy checks it)
EVENTING_FEATURES = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: config-features, namespace: knative-eventing}
data: {authentication-oidc: enabled}
"""


@functools.cache
def cluster_config() -> str:
    """The Knative ConfigMaps as the guide leaves them (custom domain and its claims,
    Eventing's OIDC authentication)."""
    return documents.kustomize("istio/domain") + "---\n" + EVENTING_FEATURES


def group(doc: dict[str, Any]) -> str:
    return doc["apiVersion"].rpartition("/")[0]


SET_NAMES = [
    *(f"deploy-{o}-{d}" for o in documents.OVERLAYS for d in documents.DATABASES),
    "custom-domain",
    "tekton+make-pipeline",
    "tekton+example-run",
    *(f"pipeline-deploy-{o}" for o in documents.OVERLAYS),
    "istioctl-profile",
]


@pytest.mark.parametrize("name", SET_NAMES)
def test_every_document_passes_its_admission_webhook(name: str) -> None:
    docs = sets()[name].documents()
    verdicts = validators.validate(sets()[name].text, {"knative": cluster_config()})
    errors = [str(v) for v in verdicts if v.result == "error"]
    assert errors == []
    accepted = {(v.project, v.index) for v in verdicts if v.result == "ok"}
    unchecked = [
        f"#{i} {d['kind']}/{d['metadata']['name']}"
        for i, d in enumerate(docs)
        if group(d) in UPSTREAM_GROUPS and (UPSTREAM_GROUPS[group(d)], i) not in accepted
    ]
    assert unchecked == [], "documents no upstream validator looked at"


def test_the_sets_cover_every_command() -> None:
    assert set(sets()) == set(SET_NAMES)


Mutation = Callable[[dict[str, Any]], None]

BROKEN: list[tuple[str, str, str, str, Mutation]] = [
    # (what, document set, kind, name, how to break it)
    ("Knative Service: unknown field", "deploy-direct-cnpg", "Service", "cqrs-order-db",
     lambda d: d["spec"]["template"]["spec"].update(containerConcurency=8)),
    ("Knative Service: min-scale not a number", "deploy-direct-cnpg", "Service", "cqrs-dispatcher",
     lambda d: d["spec"]["template"]["metadata"]["annotations"].update(
         {"autoscaling.knative.dev/min-scale": "x"})),
    ("Knative Service: a reserved env var", "deploy-direct-cnpg", "Service", "cqrs-order-db",
     lambda d: d["spec"]["template"]["spec"]["containers"][0]["env"].append(
         {"name": "K_SERVICE", "value": "x"})),
    ("Knative Service: a token volume nothing mounts", "deploy-direct-cnpg", "Service",
     "cqrs-order-db",
     lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("volumeMounts")),
    ("Knative Service: a token source without a path", "deploy-direct-cnpg", "Service",
     "cqrs-order-db",
     lambda d: d["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"][0][
         "serviceAccountToken"].pop("path")),
    ("AuthorizationPolicy: a header condition without values", "deploy-direct-cnpg",
     "AuthorizationPolicy", "cqrs-order-db-internal",
     lambda d: d["spec"]["rules"][1]["when"][0].pop("values")),
    ("Trigger without subscriber", "deploy-eventing-cnpg", "Trigger", None,
     lambda d: d["spec"].pop("subscriber")),
    ("PingSource with a bad schedule", "deploy-eventing-cnpg", "PingSource", None,
     lambda d: d["spec"].update(schedule="every five minutes")),
    ("Pipeline: runAfter a task that does not exist", "tekton+make-pipeline", "Pipeline", None,
     lambda d: d["spec"]["tasks"][1].update(runAfter=["fetch-sauce"])),
    ("PipelineRun without a required param", "tekton+make-pipeline", "PipelineRun", None,
     lambda d: d["spec"].update(params=[p for p in d["spec"]["params"]
                                        if p["name"] != "docker-user"])),
    ("Task step with an unknown field", "tekton+make-pipeline", "Task", "cqrs-run-tests",
     lambda d: d["spec"]["steps"][0].update(imag="x")),
    ("TriggerTemplate whose PipelineRun is invalid", "tekton+make-pipeline", "TriggerTemplate",
     None, lambda d: d["spec"]["resourcetemplates"][0]["spec"].pop("pipelineRef")),
    ("AuthorizationPolicy: a source with nothing in it", "deploy-direct-cnpg",
     "AuthorizationPolicy", "cqrs-order-db-internal",
     lambda d: d["spec"]["rules"][0]["from"].append({"source": {}})),
    ("PeerAuthentication: a mode that does not exist", "deploy-direct-cnpg",
     "PeerAuthentication", None, lambda d: d["spec"]["mtls"].update(mode="STRICTEST")),
    ("IstioOperator: unknown field", "istioctl-profile", "IstioOperator", None,
     lambda d: d["spec"].update(profil="minimal")),
    ("CloudNativePG Cluster: unknown field", "deploy-direct-cnpg", "Cluster", None,
     lambda d: d["spec"].update(instance=2)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "set_name", "kind", "name", "mutate"), BROKEN, ids=[b[0] for b in BROKEN]
)
def test_a_broken_document_is_refused(
    what: str, set_name: str, kind: str, name: str | None, mutate: Mutation
) -> None:
    docs = sets()[set_name].documents()
    index = next(
        i for i, d in enumerate(docs)
        if d["kind"] == kind and name in (None, d["metadata"].get("name"))
    )  # fmt: skip
    mutate(docs[index])
    verdicts = validators.validate(yaml.safe_dump_all(docs), {"knative": cluster_config()})
    refused = [v for v in verdicts if v.result == "error"]
    # (documents that refer to the broken one, such as a run of a refused Pipeline, may be
    # refused with it)
    assert index in [v.index for v in refused], f"{what}: {[str(v) for v in refused]}"


def route_host(config_maps: list[dict[str, Any]], ksvc: dict[str, Any]) -> str:
    """The host Knative's route reconciler gives the Service under those ConfigMaps."""
    meta = ksvc["metadata"]
    labels = [f"--label={k}={v}" for k, v in meta.get("labels", {}).items()]
    out = validators.subcommand(
        "knative", "domain", yaml.safe_dump_all(config_maps),
        "--namespace", meta["namespace"], "--name", meta["name"], *labels,
    )  # fmt: skip
    return out.strip()


def test_the_custom_domain_wins_only_alone() -> None:
    """docs/cluster.md, step 8: one domain in config-domain, or magic DNS wins."""
    (dispatcher,) = [
        d for d in sets()["deploy-direct-cnpg"].documents()
        if d["kind"] == "Service" and d["metadata"]["name"] == "cqrs-dispatcher"
    ]  # fmt: skip
    custom = yaml.safe_load_all(cluster_config())
    maps = [d for d in custom if d and d["kind"] == "ConfigMap"]
    (domain_map,) = [m for m in maps if m["metadata"]["name"] == "config-domain"]
    (domain,) = domain_map["data"]
    assert route_host(maps, dispatcher) == f"cqrs-dispatcher.cqrs.{domain}"
    # what `kubectl apply -k istio/domain` leaves after the default-domain job ran: both keys
    domain_map["data"] = {"1.2.3.4.sslip.io": "", domain: ""}
    assert route_host(maps, dispatcher) == "cqrs-dispatcher.cqrs.1.2.3.4.sslip.io"
    # the guide's switch: remove the magic DNS key
    del domain_map["data"]["1.2.3.4.sslip.io"]
    assert route_host(maps, dispatcher) == f"cqrs-dispatcher.cqrs.{domain}"
    (mapping,) = [d for d in sets()["custom-domain"].documents() if d["kind"] == "DomainMapping"]
    assert mapping["metadata"]["name"].endswith("." + domain)

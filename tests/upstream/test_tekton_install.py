"""Tekton Pipelines and Triggers as devtools/cluster/tekton.py installs them on the project's
node: what can be shown without the node.

The pins describe one Tekton (tools/upstream/tekton agrees with validate-tekton on every module);
the rendered manifests name only images built here (the shell image too), ask for little CPU,
and are admitted, every object, by the project's real kube-apiserver. Each check also runs on a
broken input, and must say so.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import pytest

from devtools.cluster import tekton
from tests.upstream.controlplane import ControlPlane
from tests.upstream.test_knative_install import disagreements, requirements

TOOLS = tekton.TEKTON_MODULE.parent


def test_the_tekton_pins_are_validate_tektons_on_every_module_they_share() -> None:
    ours, theirs = tekton.TEKTON_MODULE, TOOLS / "validate-tekton"
    shared = requirements(ours / "go.mod").keys() & requirements(theirs / "go.mod").keys()
    assert {tekton.PIPELINE, tekton.TRIGGERS, "knative.dev/pkg", "k8s.io/api"} <= shared
    assert disagreements(ours, theirs) == []


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return tekton.manifest_docs()


def images_named(docs: list[dict[str, Any]]) -> set[str]:
    """The containers' images, and those the controllers pass on as arguments."""
    text = json.dumps(docs)
    named = set(re.findall(r'"image": "([^"]+)"', text))
    for doc in docs:
        if doc["kind"] == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                args = container.get("args", [])
                named |= {v for k, v in itertools.pairwise(args) if k.endswith("-image")}
                named |= {a for a in args if a.startswith(("ko://", "ko.local/"))}
    return named


def problems(docs: list[dict[str, Any]]) -> list[str]:
    """What would stop a TaskRun on the node: an image left to ko, or one not built here (the
    node pulls nothing; the Windows shell image is never asked for on Linux)."""
    built = set(tekton.image_refs())
    found = [
        f"unresolved: {ref}" for ref in sorted(set(re.findall(r"ko://[^\s'\"]+", json.dumps(docs))))
    ]
    unbuilt = {i for i in images_named(docs) - built if not i.startswith("mcr.microsoft.com/")}
    return found + [f"not built here: {ref}" for ref in sorted(unbuilt)]


def test_the_manifests_name_only_images_built_here(docs) -> None:
    named = images_named(docs)
    assert tekton.SHELL_IMAGE in named
    assert {tekton.image_ref(tekton.PIPELINE, "entrypoint")} <= named
    assert {tekton.image_ref(tekton.TRIGGERS, "eventlistenersink")} <= named
    assert problems(docs) == []


def test_an_image_left_to_ko_or_pulled_is_caught(docs) -> None:
    copy = json.loads(json.dumps(docs))
    controller = next(
        d
        for d in copy
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "tekton-pipelines-controller"
    )
    args = controller["spec"]["template"]["spec"]["containers"][0]["args"]
    args[args.index("-shell-image") + 1] = "cgr.dev/chainguard/busybox@sha256:19f0"
    assert problems(copy) == ["not built here: cgr.dev/chainguard/busybox@sha256:19f0"]
    with pytest.raises(ValueError, match="not an image built here"):
        tekton.knative.KO_REFERENCE.sub(
            tekton._ko_local, "ko://github.com/tektoncd/pipeline/cmd/unknown"
        )


def test_tekton_asks_for_little_cpu_on_a_two_cpu_node(docs) -> None:
    requests = [
        c.get("resources", {}).get("requests", {}).get("cpu", "0m")
        for d in docs
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    ]
    assert sum(int(r.removesuffix("m")) for r in requests) <= 7 * 25
    assert all(
        d["spec"]["maxReplicas"] == 1 for d in docs if d["kind"] == "HorizontalPodAutoscaler"
    )


@pytest.mark.slow
def test_the_api_server_admits_every_object_of_the_install_by_server_side_apply(
    cp: ControlPlane, docs
) -> None:
    # The webhooks are not running here: their configurations are left out, as their
    # namespaced objects would otherwise wait on them (failurePolicy Fail).
    plain = [
        d
        for d in docs
        if not d["kind"].endswith("WebhookConfiguration") and d["kind"] != "ClusterInterceptor"
    ]
    applied = tekton.knative.apply(cp, plain)
    assert len(applied) == len(plain)

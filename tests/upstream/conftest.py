"""A real API server with the upstream CRDs, as a cluster that has what the docs install.

The CRDs come from the Go module cache, at the versions the validators' go.mod files pin
(the same versions the docs install): nothing upstream is copied into this repository.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from devtools import gobuild
from tests.upstream.controlplane import ControlPlane
from tests.upstream.validators import TOOLS

# (module that pins the version, upstream module, folder of its CRDs)
SERVING = [
    ("validate-knative", "knative.dev/serving", "config/core/300-resources"),
    ("validate-knative", "knative.dev/networking", "config"),
]
EVENTING = [("validate-knative", "knative.dev/eventing", "config/core/resources")]
OTHERS = [
    ("validate-tekton", "github.com/tektoncd/pipeline", "config/300-crds"),
    ("validate-tekton", "github.com/tektoncd/triggers", "config"),
    ("validate-istio", "istio.io/api", "kubernetes"),
    ("validate-cnpg", "github.com/cloudnative-pg/cloudnative-pg", "config/crd/bases"),
    # the PodMonitor of knative/monitoring, where the Prometheus operator is installed
    (
        "crds",
        "github.com/prometheus-operator/prometheus-operator",
        "example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml",
    ),
]


def crds(sources: list[tuple[str, str, str]], into: Path) -> Path:
    """The CustomResourceDefinitions in those folders (or files), gathered into one file."""
    found = []
    for pin, module, folder in sources:
        root = gobuild.module_dir(TOOLS / pin, module) / folder
        for path in sorted(root.glob("*.yaml")) if root.is_dir() else [root]:
            docs = yaml.safe_load_all(path.read_text(encoding="utf-8"))
            found += [d for d in docs if d and d.get("kind") == "CustomResourceDefinition"]
    assert found, f"no CRDs in {sources}"
    into.write_text(yaml.safe_dump_all(found), encoding="utf-8")
    return into


def cluster(tmp: Path, sources: list[tuple[str, str, str]]) -> Iterator[ControlPlane]:
    with ControlPlane() as cp:
        cp.install_crds([crds(sources, tmp / "crds.yaml")])
        yield cp


@pytest.fixture(scope="module")
def serving_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """The documented default: Knative Serving, Istio, CloudNativePG, Tekton; no Eventing."""
    yield from cluster(tmp_path_factory.mktemp("serving"), SERVING + OTHERS)


@pytest.fixture(scope="module")
def eventing_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """The same with Knative Eventing."""
    yield from cluster(tmp_path_factory.mktemp("eventing"), SERVING + EVENTING + OTHERS)


@pytest.fixture(scope="module")
def cp() -> Iterator[ControlPlane]:
    """A bare control plane (no CRDs beyond what a test applies)."""
    with ControlPlane() as plane:
        yield plane

"""Shared loading for the Tekton checks: the kustomization, the example run, the scripts."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TEKTON = ROOT / "tekton"
SCRIPTS = TEKTON / "scripts"
OVERLAYS = ("direct", "eventing")
SHOP_NAMESPACE = "cqrs"
CI_NAMESPACE = "cqrs-ci"

# The schema helper lives with the manifest tests; make it importable from here too.
sys.path.insert(0, str(ROOT / "tests" / "manifests"))
from validate import kustomize_build  # noqa: E402


def load_yaml(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


@pytest.fixture(scope="session")
def tekton_docs() -> list[dict[str, Any]]:
    """Everything `kubectl apply -k tekton` would create."""
    return kustomize_build(TEKTON)


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.fixture(scope="session")
def pipeline(tekton_docs: list[dict[str, Any]]) -> dict[str, Any]:
    pipelines = by_kind(tekton_docs, "Pipeline")
    assert list(pipelines) == ["cqrs-build-deploy"]
    return pipelines["cqrs-build-deploy"]


@pytest.fixture(scope="session")
def tasks(tekton_docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return by_kind(tekton_docs, "Task")


@pytest.fixture(scope="session")
def pipelinerun() -> dict[str, Any]:
    (run,) = load_yaml(TEKTON / "pipelinerun.yaml")
    return run

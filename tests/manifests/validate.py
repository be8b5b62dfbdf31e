"""Offline validation of Kubernetes manifests against the schemas in tests/manifests/schemas.

Stable API (other tests import it): strip_nulls, load_schema, validate_document, kustomize_build.
See schemas/SOURCES.md for why nulls are stripped and why CRD metadata is checked separately.
"""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator

SCHEMAS = Path(__file__).resolve().parent / "schemas"
OBJECTMETA = SCHEMAS / "kubernetes" / "objectmeta-meta-v1.json"


def strip_nulls(obj: Any) -> Any:
    """Drop null-valued keys recursively, as the API server does before it validates."""
    if isinstance(obj, dict):
        return {k: strip_nulls(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [strip_nulls(v) for v in obj]
    return obj


def _schema_path(api_version: str, kind: str) -> Path:
    group, _, version = api_version.rpartition("/")
    if "." in group and not group.endswith(".k8s.io"):  # a CRD: <group>/<kind>_<version>.json
        return SCHEMAS / group / f"{kind.lower()}_{version}.json"
    # core kinds follow the yannh naming: <kind>[-<first label of group>]-<version>.json
    label = {"rbac.authorization.k8s.io": "rbac"}.get(group, group.split(".")[0])
    name = f"{kind.lower()}-{label}-{version}.json" if label else f"{kind.lower()}-{version}.json"
    return SCHEMAS / "kubernetes" / name


@functools.cache
def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def load_schema(api_version: str, kind: str) -> dict[str, Any]:
    """The schema for apiVersion/kind; KeyError when there is none."""
    path = _schema_path(api_version, kind)
    if not path.is_file():
        raise KeyError(f"no schema for {api_version} {kind} (looked for {path.name})")
    schema = _load(path)
    props = schema.get("properties", {})
    # every file pins both in an enum: a sanity check that the lookup found the right file
    if api_version not in props.get("apiVersion", {}).get("enum", [api_version]):
        raise KeyError(f"{path.name} does not declare apiVersion {api_version}")
    if kind not in props.get("kind", {}).get("enum", [kind]):
        raise KeyError(f"{path.name} does not declare kind {kind}")
    return schema


@functools.cache
def _validator(api_version: str, kind: str) -> Draft7Validator:
    return Draft7Validator(load_schema(api_version, kind))


@functools.cache
def _meta_validator() -> Draft7Validator:
    return Draft7Validator(_load(OBJECTMETA))


def _format(prefix: str, err: Any) -> str:
    where = "/".join(str(p) for p in err.absolute_path) or "(root)"
    return f"{prefix}{where}: {err.message}"


# Cluster-scoped kinds with no schema file of their own, and the namespaced kind they mirror.
CLUSTER_TWINS = {
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "Role",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "RoleBinding",
}


def validate_document(doc: dict[str, Any]) -> list[str]:
    """Errors of one document (empty list = valid). Unknown apiVersion/kind is an error."""
    if not isinstance(doc, dict):
        return [f"not a mapping: {type(doc).__name__}"]
    doc = strip_nulls(doc)
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    name = (doc.get("metadata") or {}).get("name", "?")
    label = f"{kind} {name}: "
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return [f"{label}missing apiVersion or kind"]
    if (api_version, kind) in CLUSTER_TWINS:
        # the same schema as the namespaced kind (no aggregationRule used here); the real API
        # server checks these exactly in tests/upstream
        kind = CLUSTER_TWINS[api_version, kind]
        doc = {**doc, "kind": kind}
    try:
        validator = _validator(api_version, kind)
    except KeyError as exc:
        return [f"{label}{exc.args[0]}"]
    errors = [_format(label, e) for e in validator.iter_errors(doc)]
    if "metadata" not in doc:
        errors.append(f"{label}metadata is missing")
    else:
        errors += [
            _format(label + "metadata/", e) for e in _meta_validator().iter_errors(doc["metadata"])
        ]
    # core kinds already embed ObjectMeta, so the same error may be reported twice
    return sorted(set(errors))


def kustomize_build(path: str | Path) -> list[dict[str, Any]]:
    """Run `kubectl kustomize <path>` and parse every document it prints."""
    result = subprocess.run(
        ["kubectl", "kustomize", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {path} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]

"""The Tekton manifests: valid against the upstream schemas, and what schemas cannot see.

Schemas miss cross-references (a $(params.x) nobody declares, a runAfter to nowhere, a
result no task writes), the matrix drifting away from the roles the code has, unpinned
images, and RBAC that does not cover what the deploy applies. Those are checked here.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
from validate import kustomize_build, validate_document

from cqrs_common.roles import ROLES
from tests.tekton.conftest import (
    CI_NAMESPACE,
    OVERLAYS,
    ROOT,
    SHOP_NAMESPACE,
    TEKTON,
    by_kind,
    load_yaml,
)

# The remote Task the pipeline fetches with the git resolver, as it is at the pinned
# commit (tektoncd-catalog/git-clone, task/git-clone/git-clone.yaml, Task version 1.0):
# what we may pass it and read from it. A bump of the commit must update this.
GIT_CLONE_COMMIT = "035275d56e6d121deaffb7761c7a00664f724768"
GIT_CLONE = {
    "params": {
        "url": True,  # required
        **{
            name: False
            for name in [
                "revision",
                "refspec",
                "submodules",
                "depth",
                "sslVerify",
                "crtFileName",
                "subdirectory",
                "sparseCheckoutDirectories",
                "deleteExisting",
                "httpProxy",
                "httpsProxy",
                "noProxy",
                "verbose",
                "gitInitImage",
                "userHome",
            ]
        },
    },
    "param_types": {},
    "workspaces": {
        "output": False,
        "ssh-directory": True,
        "basic-auth": True,
        "ssl-ca-directory": True,
    },  # name -> optional
    "results": {"commit", "url", "committer-date"},
}

REF = re.compile(r"\$\((params|workspaces|tasks|results|context|tt\.params)\.([^)]*)\)")
PINNED_TAG = re.compile(r":v?\d+\.\d+\.\d+([-.+][\w.-]+)?$")
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# PostgreSQL versions have two parts since 10 (17.6 is a release; 17 floats).
TWO_PART_VERSIONS = {"docker.io/library/postgres"}
TWO_PART_TAG = re.compile(r":\d+\.\d+([-.][\w.-]+)?$")


def pinned(image: str) -> bool:
    """A digest, or a tag that names exactly one release."""
    if image.endswith(":latest") or "$(" in image:
        return False
    if DIGEST.search(image) or PINNED_TAG.search(image):
        return True
    return image.rpartition(":")[0] in TWO_PART_VERSIONS and bool(TWO_PART_TAG.search(image))


def strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a document, with its path."""
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from strings(value, f"{path}[{i}]")


def refs(node: Any, kind: str) -> Iterator[tuple[str, str]]:
    """(path, reference body) of every $(<kind>.…) in node."""
    for path, text in strings(node):
        for match in REF.finditer(text):
            if match.group(1) == kind:
                yield path, match.group(2)


def interface(task: dict[str, Any]) -> dict[str, Any]:
    spec = task["spec"]
    params = spec.get("params", [])
    return {
        "params": {p["name"]: "default" not in p for p in params},
        "param_types": {p["name"]: p.get("type", "string") for p in params},
        "workspaces": {w["name"]: w.get("optional", False) for w in spec.get("workspaces", [])},
        "results": {r["name"] for r in spec.get("results", [])},
    }


def task_interface(ptask: dict[str, Any], tasks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    ref = ptask["taskRef"]
    if "resolver" in ref:
        params = {p["name"]: p["value"] for p in ref["params"]}
        assert ref["resolver"] == "git", "only the git resolver is modelled here"
        assert params == {
            "url": "https://github.com/tektoncd-catalog/git-clone.git",
            "revision": GIT_CLONE_COMMIT,
            "pathInRepo": "task/git-clone/git-clone.yaml",
        }, "the remote Task changed: update GIT_CLONE to its interface at the new commit"
        return GIT_CLONE
    assert ref["name"] in tasks, f"{ptask['name']}: no Task {ref['name']} in tekton/"
    return interface(tasks[ref["name"]])


# --- schemas -------------------------------------------------------------------------


def _validate(doc: dict[str, Any]) -> list[str]:
    if doc["kind"] == "ClusterRoleBinding":
        # No ClusterRoleBinding schema is shipped; it is a RoleBinding without a namespace.
        assert "namespace" not in doc["metadata"]
        return validate_document({**doc, "kind": "RoleBinding"})
    return validate_document(doc)


def test_kustomization_documents_are_valid(tekton_docs: list[dict[str, Any]]) -> None:
    kinds = {d["kind"] for d in tekton_docs}
    assert {"Pipeline", "Task", "EventListener", "TriggerBinding", "TriggerTemplate"} <= kinds
    errors = [e for doc in tekton_docs for e in _validate(doc)]
    assert errors == []


def test_run_secrets_and_templated_run_are_valid(tekton_docs: list[dict[str, Any]]) -> None:
    docs = load_yaml(TEKTON / "pipelinerun.yaml")
    for path in sorted((TEKTON / "secrets").glob("*.yaml")):
        docs += load_yaml(path)
    for template in by_kind(tekton_docs, "TriggerTemplate").values():
        docs += template["spec"]["resourcetemplates"]
    assert len(docs) >= 4
    assert [e for doc in docs for e in validate_document(doc)] == []


def test_a_broken_pipeline_is_caught() -> None:
    """The schema really is strict where we rely on it: an unnamed step, a typo'd key."""
    (task,) = load_yaml(TEKTON / "tasks" / "deploy.yaml")
    del task["spec"]["steps"][0]["name"]
    task["spec"]["steps"][0]["imagePullPolicyy"] = "Always"
    errors = validate_document(task)
    assert any("'name' is a required property" in e for e in errors)
    assert any("imagePullPolicyy" in e for e in errors)


def test_every_namespaced_object_is_in_a_known_namespace(
    tekton_docs: list[dict[str, Any]],
) -> None:
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    for doc in tekton_docs:
        ns = doc["metadata"].get("namespace")
        if doc["kind"] in cluster_scoped:
            assert ns is None, doc["metadata"]["name"]
        elif doc["kind"] in {"Role", "RoleBinding"} and doc["metadata"]["name"] == "cqrs-deployer":
            assert ns == SHOP_NAMESPACE
        else:
            assert ns == CI_NAMESPACE, f"{doc['kind']} {doc['metadata']['name']}"


# --- pipeline wiring ---------------------------------------------------------------------


def pipeline_problems(pipeline: dict[str, Any], tasks: dict[str, dict[str, Any]]) -> list[str]:
    """Every reference in the Pipeline that does not resolve."""
    spec = pipeline["spec"]
    params = {p["name"] for p in spec["params"]}
    workspaces = {w["name"] for w in spec["workspaces"]}
    ptasks = {t["name"]: t for t in spec["tasks"]}
    problems: list[str] = []

    for path, body in refs(spec["tasks"], "params"):
        if body not in params:
            problems.append(f"{path}: $(params.{body}) is not a Pipeline param")
    for path, body in refs(spec["tasks"], "workspaces"):
        if body.split(".")[0] not in workspaces:
            problems.append(f"{path}: $(workspaces.{body}) is not a Pipeline workspace")
    used_params = {body for _, body in refs(spec["tasks"], "params")}
    problems += [f"Pipeline param {p} is never used" for p in sorted(params - used_params)]

    for name, ptask in ptasks.items():
        iface = task_interface(ptask, tasks)
        for dep in ptask.get("runAfter", []):
            if dep not in ptasks or dep == name:
                problems.append(f"{name}: runAfter {dep} is not another task")
        given = [p["name"] for p in ptask.get("params", [])]
        given += [p["name"] for p in ptask.get("matrix", {}).get("params", [])]
        problems += [
            f"{name}: param {p} given twice" for p in {p for p in given if given.count(p) > 1}
        ]
        problems += [f"{name}: Task has no param {p}" for p in set(given) - set(iface["params"])]
        problems += [
            f"{name}: required param {p} not given"
            for p, required in iface["params"].items()
            if required and p not in given
        ]
        for p in ptask.get("params", []):
            if iface["param_types"].get(p["name"]) == "array":
                value = p["value"]
                if not (isinstance(value, list) or str(value).endswith("[*])")):
                    problems.append(f"{name}: array param {p['name']} gets a string")
        bound = {w["name"]: w["workspace"] for w in ptask.get("workspaces", [])}
        problems += [
            f"{name}: Task has no workspace {w}" for w in set(bound) - set(iface["workspaces"])
        ]
        problems += [
            f"{name}: binds unknown workspace {w}" for w in set(bound.values()) - workspaces
        ]
        problems += [
            f"{name}: required workspace {w} not bound"
            for w, optional in iface["workspaces"].items()
            if not optional and w not in bound
        ]
        for path, body in refs(ptask, "tasks"):
            producer, _, rest = body.partition(".results.")
            result = rest.removesuffix("[*]")
            if producer not in ptasks:
                problems.append(f"{name}{path}: no task {producer}")
                continue
            if result not in task_interface(ptasks[producer], tasks)["results"]:
                problems.append(f"{name}{path}: task {producer} has no result {result}")
            if "matrix" in ptasks[producer] and not rest.endswith("[*]"):
                problems.append(f"{name}{path}: a matrixed task's result is an array: use [*]")
    return problems


def task_problems(tasks: dict[str, dict[str, Any]]) -> list[str]:
    """Every reference in the Tasks that does not resolve, and what is declared but unused."""
    problems: list[str] = []
    for name, task in tasks.items():
        iface = interface(task)
        spec = task["spec"]
        for path, body in refs(spec, "params"):
            param = body.removesuffix("[*]")
            if param not in iface["params"]:
                problems.append(f"{name}{path}: $(params.{body}) is not declared")
            elif body.endswith("[*]") and iface["param_types"][param] != "array":
                problems.append(f"{name}{path}: [*] on string param {param}")
            elif body.endswith("[*]") and not re.search(r"\.(args|command)\[\d+\]$", path):
                problems.append(f"{name}{path}: array params expand only in args/command")
        for path, body in refs(spec, "workspaces"):
            workspace, _, attr = body.partition(".")
            if workspace not in iface["workspaces"] or attr not in {
                "path",
                "bound",
                "claim",
                "volume",
            }:
                problems.append(f"{name}{path}: $(workspaces.{body}) does not resolve")
        written = set()
        for path, body in refs(spec, "results"):
            result, _, attr = body.partition(".")
            written.add(result)
            if result not in iface["results"] or attr != "path":
                problems.append(f"{name}{path}: $(results.{body}) does not resolve")
        problems += [f"{name}: result {r} is never written" for r in iface["results"] - written]
        used = {b.removesuffix("[*]") for _, b in refs(spec, "params")}
        problems += [f"{name}: param {p} is never used" for p in set(iface["params"]) - used]
    return problems


def test_pipeline_references_resolve(
    pipeline: dict[str, Any], tasks: dict[str, dict[str, Any]]
) -> None:
    assert pipeline_problems(pipeline, tasks) == []


def test_tasks_references_resolve(tasks: dict[str, dict[str, Any]]) -> None:
    assert task_problems(tasks) == []


def test_broken_references_are_caught(
    pipeline: dict[str, Any], tasks: dict[str, dict[str, Any]]
) -> None:
    broken = copy.deepcopy(pipeline)
    ptasks = {t["name"]: t for t in broken["spec"]["tasks"]}
    ptasks["run-tests"]["runAfter"] = ["fetch-sauce"]
    ptasks["deploy"]["params"][1]["value"] = "$(tasks.build-push.results.IMAGE_URL)"
    ptasks["deploy"]["params"][2]["value"] = "$(tasks.build-push.results.DIGEST[*])"
    ptasks["build-push"]["params"][0]["value"] = "$(params.registyr)"
    ptasks["fetch-source"]["workspaces"][0]["name"] = "out"
    problems = "\n".join(pipeline_problems(broken, tasks))
    for needle in (
        "runAfter fetch-sauce",
        "use [*]",
        "no result DIGEST",
        "params.registyr",
        "Task has no workspace out",
        "required workspace output not bound",
        "array param image-urls gets a string",
    ):
        assert needle in problems

    broken_tasks = copy.deepcopy(tasks)
    step = broken_tasks["cqrs-build-image"]["spec"]["steps"][0]
    step["env"][0]["value"] = "$(params.rol)"
    step["env"][1]["value"] = "docker.io/someone/cqrs-x:1"
    step["env"][-1]["value"] = "$(results.IMAGE_URI.path)"
    problems = "\n".join(task_problems(broken_tasks))
    for needle in (
        "$(params.rol) is not declared",
        "param role is never used",
        "IMAGE_URI.path) does not resolve",
        "result IMAGE_URL is never written",
    ):
        assert needle in problems


def test_matrix_is_exactly_the_roles(pipeline: dict[str, Any]) -> None:
    matrixed = [t for t in pipeline["spec"]["tasks"] if "matrix" in t]
    assert [t["name"] for t in matrixed] == ["build-push"]
    (param,) = matrixed[0]["matrix"]["params"]
    assert param["name"] == "role"
    assert sorted(param["value"]) == sorted(role.name for role in ROLES)
    assert len(param["value"]) == len(set(param["value"]))


def test_order_is_fetch_test_build_deploy(pipeline: dict[str, Any]) -> None:
    after = {t["name"]: t.get("runAfter", []) for t in pipeline["spec"]["tasks"]}
    assert after == {
        "fetch-source": [],
        "run-tests": ["fetch-source"],
        "build-push": ["run-tests"],
        "deploy": ["build-push"],
    }


def test_steps_are_named_and_images_pinned(tasks: dict[str, dict[str, Any]]) -> None:
    problems: list[str] = []
    for name, task in tasks.items():
        containers = task["spec"]["steps"] + task["spec"].get("sidecars", [])
        names = [c.get("name") for c in containers]
        problems += [f"{name}: unnamed step or sidecar" for n in names if not n]
        problems += [f"{name}: {n} named twice" for n in set(names) if names.count(n) > 1]
        for container in containers:
            image = container["image"]
            where = f"{name}/{container.get('name')}"
            if "$(" in image:
                problems.append(f"{where}: image {image} is set at run time, so not pinned")
            elif not pinned(image):
                problems.append(f"{where}: image {image} has no digest or exact version tag")
            elif "." not in image.split("/")[0]:
                problems.append(f"{where}: image {image} does not name its registry")
    assert problems == []


@pytest.mark.parametrize(
    ("image", "ok"),
    [
        ("docker.io/library/python:3.12.12-slim-bookworm", True),
        ("quay.io/buildah/stable:v1.43.0", True),
        ("docker.io/alpine/k8s:1.34.1", True),
        ("docker.io/library/python@sha256:" + "a" * 64, True),
        ("quay.io/buildah/stable:v1", False),
        ("docker.io/library/python:3.12-slim", False),
        ("docker.io/library/postgres:latest", False),
        ("docker.io/library/postgres", False),
        ("docker.io/library/postgres:17.6", True),
        ("docker.io/library/postgres:17", False),
        ("docker.io/library/redis:7.4", False),
    ],
)
def test_pin_rule(image: str, ok: bool) -> None:
    assert pinned(image) is ok


def test_steps_run_scripts_from_the_source(tasks: dict[str, dict[str, Any]]) -> None:
    prefix = "$(workspaces.source.path)/"
    scripts = set()
    for task in tasks.values():
        for step in task["spec"]["steps"]:
            for word in step.get("command", []):
                if word.startswith(prefix):
                    scripts.add(word.removeprefix(prefix))
    assert scripts == {
        "tekton/scripts/run-tests.sh",
        "tekton/scripts/build-image.sh",
        "tekton/scripts/deploy.sh",
    }
    for script in scripts:
        path = ROOT / script
        assert path.is_file() and os.access(path, os.X_OK), script


# --- runs, credentials, RBAC ---------------------------------------------------------------


def test_pipelinerun_matches_the_pipeline(
    pipelinerun: dict[str, Any], pipeline: dict[str, Any], tekton_docs: list[dict[str, Any]]
) -> None:
    spec = pipelinerun["spec"]
    assert "generateName" in pipelinerun["metadata"] and "name" not in pipelinerun["metadata"]
    assert spec["pipelineRef"] == {"name": pipeline["metadata"]["name"]}
    declared = {p["name"]: p for p in pipeline["spec"]["params"]}
    given = [p["name"] for p in spec["params"]]
    assert set(given) <= set(declared)
    assert {n for n, p in declared.items() if "default" not in p} <= set(given)
    assert {"repo-url", "revision", "docker-user", "tag"} <= set(given)
    assert [w["name"] for w in spec["workspaces"]] == [
        w["name"] for w in pipeline["spec"]["workspaces"]
    ]
    accounts = set(by_kind(tekton_docs, "ServiceAccount"))
    assert spec["taskRunTemplate"]["serviceAccountName"] in accounts
    ptasks = {t["name"] for t in pipeline["spec"]["tasks"]}
    for override in spec["taskRunSpecs"]:
        assert override["pipelineTaskName"] in ptasks
        assert override["serviceAccountName"] in accounts


def test_trigger_template_runs_the_same_pipelinerun(
    pipelinerun: dict[str, Any], tekton_docs: list[dict[str, Any]]
) -> None:
    (template,) = by_kind(tekton_docs, "TriggerTemplate").values()
    (templated,) = template["spec"]["resourcetemplates"]
    tt_params = {p["name"] for p in template["spec"]["params"]}
    used = {body for _, body in refs(templated, "tt.params")}
    assert used == tt_params
    assert [p["value"] for p in templated["spec"]["params"]] == [
        f"$(tt.params.{p['name']})" for p in templated["spec"]["params"]
    ]

    def without_values(run: dict[str, Any]) -> dict[str, Any]:
        spec = {**run["spec"], "params": [p["name"] for p in run["spec"]["params"]]}
        return {**run, "spec": spec}

    assert without_values(templated) == without_values(pipelinerun)


def test_dockerconfig_workspace_is_the_secret_as_config_json(pipelinerun: dict[str, Any]) -> None:
    (secret_template,) = load_yaml(TEKTON / "secrets" / "docker-hub-credentials.yaml")
    ws = {w["name"]: w for w in pipelinerun["spec"]["workspaces"]}
    assert ws["dockerconfig"]["secret"] == {
        "secretName": secret_template["metadata"]["name"],
        "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
    }
    assert secret_template["type"] == "kubernetes.io/dockerconfigjson"
    assert secret_template["metadata"]["namespace"] == pipelinerun["metadata"]["namespace"]


def test_secret_templates_hold_no_credentials(tekton_docs: list[dict[str, Any]]) -> None:
    (docker,) = load_yaml(TEKTON / "secrets" / "docker-hub-credentials.yaml")
    config = json.loads(docker["stringData"][".dockerconfigjson"])
    for entry in config["auths"].values():
        try:
            decoded = base64.b64decode(entry["auth"], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        assert ":" not in decoded, "looks like a real user:token"
        assert "password" not in entry
    (webhook,) = load_yaml(TEKTON / "secrets" / "github-webhook-secret.yaml")
    assert webhook["stringData"]["secret"].startswith("<")
    # an apply of the kustomization must never overwrite the real Secrets
    assert by_kind(tekton_docs, "Secret") == {}


def _overlay_docs() -> dict[str, list[dict[str, Any]]]:
    missing = [o for o in OVERLAYS if not (ROOT / "knative" / "overlays" / o).is_dir()]
    assert not missing, f"knative/overlays/{missing} missing: the pipeline deploys them"
    return {o: kustomize_build(ROOT / "knative" / "overlays" / o) for o in OVERLAYS}


# Kinds the overlays may contain, and their resource names for RBAC.
RESOURCES = {
    ("serving.knative.dev", "Service"): "services",
    ("eventing.knative.dev", "Broker"): "brokers",
    ("eventing.knative.dev", "Trigger"): "triggers",
    ("sources.knative.dev", "SinkBinding"): "sinkbindings",
    ("sources.knative.dev", "PingSource"): "pingsources",
    ("", "ConfigMap"): "configmaps",
    ("", "Service"): "services",
    ("", "ServiceAccount"): "serviceaccounts",
    ("batch", "CronJob"): "cronjobs",
    ("batch", "Job"): "jobs",
    ("apps", "Deployment"): "deployments",
    ("apps", "StatefulSet"): "statefulsets",
    ("", "PersistentVolumeClaim"): "persistentvolumeclaims",
    ("serving.knative.dev", "DomainMapping"): "domainmappings",
    ("networking.istio.io", "DestinationRule"): "destinationrules",
    ("security.istio.io", "PeerAuthentication"): "peerauthentications",
    ("security.istio.io", "AuthorizationPolicy"): "authorizationpolicies",
}
APPLY_VERBS = {"get", "create", "patch"}


def test_deployer_role_covers_exactly_what_the_overlays_contain(
    tekton_docs: list[dict[str, Any]], pipelinerun: dict[str, Any]
) -> None:
    needed: set[tuple[str, str]] = set()
    for overlay, docs in _overlay_docs().items():
        for doc in docs:
            group = doc["apiVersion"].rpartition("/")[0]
            key = (group, doc["kind"])
            assert key in RESOURCES, f"{overlay}: add {key} to RESOURCES and the Role"
            assert doc["metadata"].get("namespace") == SHOP_NAMESPACE, (
                f"{overlay}: {doc['kind']} {doc['metadata']['name']} is outside namespace "
                f"{SHOP_NAMESPACE}, where the deployer's Role is"
            )
            needed.add((group, RESOURCES[key]))
    (role,) = (
        d for d in tekton_docs if d["kind"] == "Role" and d["metadata"]["name"] == "cqrs-deployer"
    )
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "resourceNames" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert "*" not in {v for verbs in granted.values() for v in verbs}
    assert set(granted) == needed, "the Role should grant what the overlays contain, no more"
    for key, verbs in granted.items():
        assert verbs >= APPLY_VERBS, f"{key}: kubectl apply needs {APPLY_VERBS}"
        assert "delete" not in verbs
    assert granted[("serving.knative.dev", "services")] >= {"list", "watch"}  # kubectl wait

    (binding,) = (
        d
        for d in tekton_docs
        if d["kind"] == "RoleBinding" and d["metadata"]["namespace"] == SHOP_NAMESPACE
    )
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    (override,) = pipelinerun["spec"]["taskRunSpecs"]
    assert override["pipelineTaskName"] == "deploy"
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "namespace": CI_NAMESPACE,
            "name": override["serviceAccountName"],
        }
    ]


def test_build_account_has_no_rights(
    tekton_docs: list[dict[str, Any]], pipelinerun: dict[str, Any]
) -> None:
    account = pipelinerun["spec"]["taskRunTemplate"]["serviceAccountName"]
    for doc in tekton_docs:
        if doc["kind"] in {"RoleBinding", "ClusterRoleBinding"}:
            assert account not in {s["name"] for s in doc["subjects"]}


# --- triggers ------------------------------------------------------------------------


def test_push_to_main_starts_a_run(tekton_docs: list[dict[str, Any]]) -> None:
    (listener,) = by_kind(tekton_docs, "EventListener").values()
    (trigger,) = listener["spec"]["triggers"]
    github, cel = trigger["interceptors"]
    assert github["ref"] == {"name": "github", "kind": "ClusterInterceptor"}
    gparams = {p["name"]: p["value"] for p in github["params"]}
    assert gparams["eventTypes"] == ["push"]
    (webhook,) = load_yaml(TEKTON / "secrets" / "github-webhook-secret.yaml")
    assert gparams["secretRef"] == {
        "secretName": webhook["metadata"]["name"],
        "secretKey": next(iter(webhook["stringData"])),
    }
    assert cel["ref"]["name"] == "cel"
    cparams = {p["name"]: p["value"] for p in cel["params"]}
    assert "body.ref == 'refs/heads/main'" in cparams["filter"]
    extensions = {o["key"] for o in cparams.get("overlays", [])}

    bindings = by_kind(tekton_docs, "TriggerBinding")
    bound: dict[str, str] = {}
    for ref in trigger["bindings"]:
        assert ref["ref"] in bindings
        for p in bindings[ref["ref"]]["spec"]["params"]:
            assert p["name"] not in bound, f"{p['name']} bound twice"
            bound[p["name"]] = p["value"]
    for value in bound.values():
        for ext in re.findall(r"\$\(extensions\.([^)]+)\)", value):
            assert ext in extensions
    assert bound["revision"] == "$(body.after)"

    templates = by_kind(tekton_docs, "TriggerTemplate")
    template = templates[trigger["template"]["ref"]]
    tparams = {p["name"]: p for p in template["spec"]["params"]}
    assert set(bound) <= set(tparams)
    assert {n for n, p in tparams.items() if "default" not in p} <= set(bound)

    account = listener["spec"]["serviceAccountName"]
    roles = {
        (d["kind"], d["roleRef"]["name"])
        for d in tekton_docs
        if d["kind"] in {"RoleBinding", "ClusterRoleBinding"}
        and {"kind": "ServiceAccount", "name": account, "namespace": CI_NAMESPACE} in d["subjects"]
    }
    # its own narrow roles, not Triggers' stock ones (those read every Secret); what they
    # allow is checked against the real authorizer in tests/upstream
    assert roles == {
        ("RoleBinding", "cqrs-triggers-eventlistener"),
        ("ClusterRoleBinding", "cqrs-triggers-eventlistener"),
    }


def test_the_guide_s_commands_name_what_exists() -> None:
    """docs/tekton.md's commands, run as written: every kustomization it applies exists, every
    make target it names is one, and it creates every Secret the pipeline reads."""
    text = (ROOT / "docs" / "tekton.md").read_text(encoding="utf-8")
    applied = re.findall(r"kubectl apply -k ([\w/.-]+)", text)
    assert applied and all((ROOT / p / "kustomization.yaml").is_file() for p in applied), applied
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))
    named = set(re.findall(r"`make ([a-z][a-z-]*)", text)) | set(
        re.findall(r"^(?:\w+=\S+ )*make ([a-z][a-z-]*)", text, re.M)
    )
    assert named and named <= targets, named - targets
    created = set(re.findall(r"create secret \S+ ([a-z0-9-]+)", text))
    read = {doc["metadata"]["name"] for path in sorted((ROOT / "tekton" / "secrets").glob("*.yaml"))
            for doc in load_yaml(path)}  # fmt: skip
    assert read and read <= created, read - created

"""The pipeline's ServiceAccounts, by the real authorizer, with tokens the API server minted.

The deploy step's account can apply exactly what the deploy step applies, for both overlays,
and nothing else; the EventListener's account can start PipelineRuns and read its triggers,
and cannot read any Secret.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from cqrs_common.roles import ROLES
from devtools import gobuild
from tests.upstream.controlplane import ControlPlane
from tests.upstream.documents import OVERLAYS, REGISTRY, ROOT, TAG, pipeline_deploy
from tests.upstream.standin import NAMESPACE, StandInControllers
from tests.upstream.validators import TOOLS

pytestmark = pytest.mark.slow

CI = "cqrs-ci"
DEPLOYER, LISTENER = "cqrs-deployer", "cqrs-triggers"
# What any authenticated caller may do (system:basic-user): ask what it may do.
BASELINE_GROUPS = {"authorization.k8s.io", "authentication.k8s.io"}


def account_env(cp: ControlPlane, account: str, tmp: Path) -> dict[str, str]:
    """KUBECONFIG of a ServiceAccount, with a token the API server mints for it."""
    token = cp.kubectl("create", "token", account, "-n", CI, "--duration=1h").stdout.strip()
    config = yaml.safe_load(cp.kubeconfig.read_text())
    config["users"] = [{"name": account, "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = account
    path = tmp / f"{account}.kubeconfig"
    path.write_text(json.dumps(config))
    return {**os.environ, "KUBECONFIG": str(path), "KUBECACHEDIR": str(tmp / f"{account}-cache")}


def kubectl(
    env: dict[str, str], *args: str, input: str | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["kubectl", *args], env=env, input=input, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip


def rules(env: dict[str, str], namespace: str) -> set[tuple[str, str, str]]:
    """(group, resource, verb) the account holds in the namespace (SelfSubjectRulesReview)."""
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": namespace},
    }
    # (no client-side validation: kubectl would list CRDs for it, which is no right of theirs)
    out = kubectl(
        env, "create", "--validate=false", "-f", "-", "-o", "json", input=json.dumps(review)
    )
    assert out.returncode == 0, out.stderr
    return {
        (group, resource, verb)
        for rule in json.loads(out.stdout)["status"]["resourceRules"]
        for group in rule.get("apiGroups", [""])
        for resource in rule.get("resources", [])
        for verb in rule["verbs"]
        if group not in BASELINE_GROUPS
    }


def can(env: dict[str, str], *args: str) -> bool:
    return kubectl(env, "auth", "can-i", *args).stdout.strip() == "yes"


def plural(cp: ControlPlane, api_version: str, kind: str) -> tuple[str, str]:
    """(group, resource) of a kind, from the server's discovery document."""
    group = api_version.rpartition("/")[0]
    path = f"/apis/{api_version}" if group else f"/api/{api_version}"
    listing = json.loads(cp.kubectl("get", "--raw", path).stdout)
    (name,) = [
        r["name"] for r in listing["resources"] if r["kind"] == kind and "/" not in r["name"]
    ]
    return group, name


def needed_by_the_deploy_step(cp: ControlPlane) -> set[tuple[str, str, str]]:
    """What `kubectl apply` (get, create, patch) and `kubectl wait ksvc --all` need."""
    kinds = {
        (d["apiVersion"], d["kind"])
        for overlay in OVERLAYS
        for d in yaml.safe_load_all(pipeline_deploy(overlay))
        if d
    }
    needed = {(*plural(cp, a, k), v) for a, k in kinds for v in ("get", "create", "patch")}
    return needed | {("serving.knative.dev", "services", v) for v in ("list", "watch")}


@pytest.fixture(scope="module")
def cluster(eventing_cluster: ControlPlane) -> ControlPlane:
    """Knative (with Eventing), Tekton Triggers' roles, the shop's namespace, `apply -k tekton`."""
    for ns in ("knative-serving", "knative-eventing"):
        eventing_cluster.kubectl("create", "namespace", ns, check=False)
    # Triggers' own ClusterRoles, as its release installs them: a binding to one of them must
    # grant what it grants here too
    triggers = gobuild.module_dir(TOOLS / "validate-tekton", "github.com/tektoncd/triggers")
    eventing_cluster.kubectl("apply", "-f", str(triggers / "config" / "200-clusterrole.yaml"))
    eventing_cluster.kubectl("apply", "-k", str(ROOT / "knative" / "namespace"))
    eventing_cluster.kubectl("apply", "-k", str(ROOT / "tekton"))
    return eventing_cluster


def test_deployer_holds_exactly_what_the_deploy_step_needs(
    cluster: ControlPlane, tmp_path: Path
) -> None:
    env = account_env(cluster, DEPLOYER, tmp_path)
    assert rules(env, NAMESPACE) == needed_by_the_deploy_step(cluster)
    assert rules(env, CI) == set()
    refused = [
        ("get", "secrets", "-n", NAMESPACE),
        ("list", "secrets", "--all-namespaces"),
        ("create", "pods", "-n", NAMESPACE),
        ("create", "deployments.apps", "-n", NAMESPACE),
        ("create", "rolebindings.rbac.authorization.k8s.io", "-n", NAMESPACE),
        ("delete", "services.serving.knative.dev", "-n", NAMESPACE),
        ("create", "services.serving.knative.dev", "-n", "default"),
        ("patch", "configmaps", "-n", "knative-serving"),
        ("create", "pipelineruns.tekton.dev", "-n", CI),
        ("impersonate", "serviceaccounts", "-n", CI),
    ]
    assert [r for r in refused if can(env, *r)] == []


def test_the_deploy_step_runs_as_the_deployer(cluster: ControlPlane, tmp_path: Path) -> None:
    env = account_env(cluster, DEPLOYER, tmp_path)
    urls = [f"{REGISTRY}/{r.service}:{TAG}" for r in ROLES]
    for overlay in OVERLAYS:
        for digit in "12":  # the second run patches every Service to new digests
            digests = [f"sha256:{digit * 64}"] * len(urls)
            with StandInControllers(cluster):
                result = subprocess.run(
                    ["bash", "tekton/scripts/deploy.sh", "--overlay", overlay, *urls, "--",
                     *digests],
                    cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
                )  # fmt: skip
            assert result.returncode == 0, result.stderr
    images = cluster.kubectl(
        "get", "ksvc", "-n", NAMESPACE, "-o", "jsonpath={..containers[0].image}"
    ).stdout.split()
    assert len(images) == len(ROLES) and all(i.endswith("@sha256:" + "2" * 64) for i in images)


def test_a_broader_deployer_role_is_caught(cluster: ControlPlane, tmp_path: Path) -> None:
    env = account_env(cluster, DEPLOYER, tmp_path)
    secrets = {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}
    extra = [{"op": "add", "path": "/rules/-", "value": secrets}]
    cluster.kubectl(
        "patch", "role", DEPLOYER, "-n", NAMESPACE, "--type=json", "-p", json.dumps(extra)
    )
    try:
        assert ("", "secrets", "get") in rules(env, NAMESPACE)
        assert rules(env, NAMESPACE) != needed_by_the_deploy_step(cluster)
    finally:
        cluster.kubectl("apply", "-k", str(ROOT / "tekton"))
    assert rules(env, NAMESPACE) == needed_by_the_deploy_step(cluster)


def test_event_listener_reads_no_secret(cluster: ControlPlane, tmp_path: Path) -> None:
    env = account_env(cluster, LISTENER, tmp_path)
    assert can(env, "create", "pipelineruns.tekton.dev", "-n", CI)
    assert can(env, "list", "clusterinterceptors.triggers.tekton.dev")
    assert can(env, "get", "triggertemplates.triggers.tekton.dev", "-n", CI)
    refused = [
        ("list", "secrets", "--all-namespaces"),
        ("get", "secrets", "-n", CI),
        ("get", "secrets", "-n", NAMESPACE),
        ("impersonate", "serviceaccounts", "-n", CI),
        ("create", "taskruns.tekton.dev", "-n", CI),
        ("create", "pipelineruns.tekton.dev", "-n", NAMESPACE),
    ]
    assert [r for r in refused if can(env, *r)] == []

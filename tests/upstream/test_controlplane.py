"""The test control plane is a real API server: authentication, tokens, RBAC, CRD validation."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools import gobuild
from tests.upstream.controlplane import ControlPlane, KubectlError

pytestmark = pytest.mark.slow

NAMESPACE = "harness"
SA = "robot"
SA_USER = f"system:serviceaccount:{NAMESPACE}:{SA}"

WIDGET_CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.cqrs.example
spec:
  group: test.cqrs.example
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          required: [spec]
          properties:
            spec:
              type: object
              required: [size]
              properties:
                size: {type: integer, minimum: 1}
"""


@pytest.fixture(scope="module")
def cp() -> Iterator[ControlPlane]:
    with ControlPlane() as plane:
        plane.kubectl("create", "namespace", NAMESPACE)
        plane.kubectl("create", "serviceaccount", SA, "-n", NAMESPACE)
        yield plane


def review(cp: ControlPlane, token: str, audience: str) -> dict:
    """A TokenReview, as the admin: what the API server makes of `token` for `audience`."""
    body = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token, "audiences": [audience]},
    }
    done = cp.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(body))
    return json.loads(done.stdout)["status"]


def test_server_answers(cp: ControlPlane) -> None:
    version = json.loads(cp.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == "v1.36.3"
    names = cp.kubectl("get", "ns", "-o", "name").stdout.split()
    assert {"namespace/default", "namespace/kube-system", f"namespace/{NAMESPACE}"} <= set(names)
    assert cp.url.startswith("https://127.0.0.1:")


def test_token_request_and_review(cp: ControlPlane) -> None:
    token = cp.kubectl("create", "token", SA, "-n", NAMESPACE, "--audience", "cqrs-x").stdout
    token = token.strip()

    accepted = review(cp, token, "cqrs-x")
    assert accepted["authenticated"] is True
    assert accepted["user"]["username"] == SA_USER
    assert accepted["audiences"] == ["cqrs-x"]

    refused = review(cp, token, "someone-else")
    assert not refused.get("authenticated")
    assert "audience" in refused.get("error", ""), refused


def test_rbac_is_enforced(cp: ControlPlane) -> None:
    def can_create_pods() -> str:
        done = cp.kubectl("auth", "can-i", "create", "pods", "-n", NAMESPACE, as_user=SA_USER,
                          check=False)  # fmt: skip
        return done.stdout.strip()

    assert can_create_pods() == "no"
    with pytest.raises(KubectlError, match="forbidden"):
        cp.kubectl("get", "pods", "-n", NAMESPACE, as_user=SA_USER)

    cp.kubectl("create", "role", "pod-maker", "--verb=create,get,list", "--resource=pods",
               "-n", NAMESPACE)  # fmt: skip
    cp.kubectl("create", "rolebinding", "robot-makes-pods", "--role=pod-maker",
               f"--serviceaccount={NAMESPACE}:{SA}", "-n", NAMESPACE)  # fmt: skip

    assert can_create_pods() == "yes"
    cp.kubectl("get", "pods", "-n", NAMESPACE, as_user=SA_USER)
    # Only where the binding is: another namespace stays closed.
    denied = cp.kubectl("auth", "can-i", "create", "pods", "-n", "default", as_user=SA_USER,
                        check=False)  # fmt: skip
    assert denied.stdout.strip() == "no"


def test_crd_is_established_and_validates(cp: ControlPlane, tmp_path: Path) -> None:
    crd_file = tmp_path / "widgets.yaml"
    crd_file.write_text(WIDGET_CRD)
    assert cp.install_crds([crd_file]) == ["widgets.test.cqrs.example"]
    established = cp.kubectl(
        "get", "crd", "widgets.test.cqrs.example",
        "-o", "jsonpath={.status.conditions[?(@.type=='Established')].status}",
    ).stdout  # fmt: skip
    assert established == "True"

    def widget(name: str, size: object) -> str:
        return json.dumps(
            {
                "apiVersion": "test.cqrs.example/v1",
                "kind": "Widget",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {"size": size},
            }
        )

    cp.kubectl("create", "-f", "-", input=widget("good", 3))
    for name, size in (("zero", 0), ("text", "big")):
        refused = cp.kubectl("create", "-f", "-", input=widget(name, size), check=False)
        assert refused.returncode != 0
        assert "spec.size" in refused.stderr, refused.stderr
    stored = cp.kubectl("get", "widgets", "-n", NAMESPACE, "-o", "name").stdout.split()
    assert stored == ["widget.test.cqrs.example/good"]


def test_stop_leaves_nothing(tmp_path: Path) -> None:
    plane = ControlPlane().start()
    assert plane.dir is not None
    data, pids = plane.dir, [p.popen.pid for p in plane._processes]
    plane.stop()
    assert not data.exists()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()


def test_build_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                         capfd: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """A binary is built once per content of the module; a change builds a new one."""
    go = gobuild.go_binary()
    # Go's own build cache defaults to $XDG_CACHE_HOME/go-build: keep it where it is.
    gocache = subprocess.run([go, "env", "GOCACHE"], capture_output=True, text=True).stdout.strip()
    monkeypatch.setenv("GOCACHE", gocache)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    module = tmp_path / "hello"
    module.mkdir()
    (module / "go.mod").write_text("module example.test/hello\n\ngo 1.22\n")
    (module / "main.go").write_text('package main\n\nfunc main() { println("one") }\n')

    first = gobuild.build(module, ".", "hello")
    assert "building hello" in capfd.readouterr().err
    assert gobuild.build(module, ".", "hello") == first
    assert "building" not in capfd.readouterr().err
    assert subprocess.run([first], capture_output=True, text=True).stderr == "one\n"

    (module / "main.go").write_text('package main\n\nfunc main() { println("two") }\n')
    second = gobuild.build(module, ".", "hello")
    assert second != first
    assert subprocess.run([second], capture_output=True, text=True).stderr == "two\n"

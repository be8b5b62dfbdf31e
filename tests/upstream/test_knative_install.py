"""Knative Serving with Traefik as its ingress, as devtools/cluster/knative.py installs it on the
project's node: what can be shown without the node.

The pins describe one Knative (tools/upstream/knative agrees with validate-knative on every
module); the rendered manifests name only images that are built here, select Traefik's ingress
class, and are admitted, every object, by the project's real kube-apiserver; the conformance
suite is asked for the images we build, and its output is read right. Each check also runs on a
broken input, and must say so.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools import gobuild
from devtools.cluster import knative
from tests.upstream.controlplane import ControlPlane, KubectlError

TOOLS = knative.KNATIVE_MODULE.parent
DOMAINS = ("127.0.0.1.sslip.io", "example.com")
AUTOSCALER = {"stable-window": "6s", "scale-to-zero-grace-period": "5s"}


# --- the pins ---------------------------------------------------------------------------------


def requirements(gomod: Path) -> dict[str, str]:
    """Each module a go.mod requires, and its version (both `require (...)` and one-liners)."""
    found = {}
    block = False
    for raw in gomod.read_text().splitlines():
        line = raw.split("//")[0].strip()
        if line.startswith("require ("):
            block = True
        elif block and line == ")":
            block = False
        elif block and line:
            module, version = line.split()[:2]
            found[module] = version
        elif line.startswith("require "):
            module, version = line.split()[1:3]
            found[module] = version
    return found


def disagreements(one: Path, other: Path) -> list[str]:
    a, b = requirements(one / "go.mod"), requirements(other / "go.mod")
    return [
        f"{m}: {a[m]} in {one.name}, {b[m]} in {other.name}"
        for m in sorted(a.keys() & b)
        if a[m] != b[m]
    ]


def test_the_knative_pins_are_validate_knatives_on_every_module_they_share() -> None:
    ours, theirs = knative.KNATIVE_MODULE, TOOLS / "validate-knative"
    shared = requirements(ours / "go.mod").keys() & requirements(theirs / "go.mod").keys()
    # the modules that make a Knative release, at least, are in both
    assert {
        "knative.dev/serving",
        "knative.dev/networking",
        "knative.dev/pkg",
        "k8s.io/api",
    } <= shared
    assert disagreements(ours, theirs) == []


def test_a_pin_that_moves_on_one_side_only_is_reported(tmp_path: Path) -> None:
    broken = tmp_path / "knative"
    broken.mkdir()
    text = (knative.KNATIVE_MODULE / "go.mod").read_text()
    (broken / "go.mod").write_text(re.sub(r"(k8s\.io/api) v\S+", r"\1 v0.35.0", text, count=1))
    assert disagreements(broken, TOOLS / "validate-knative") == [
        "k8s.io/api: v0.35.0 in knative, v0.35.7 in validate-knative"
    ]


def test_traefiks_own_replaces_are_repeated_or_stood_in_for() -> None:
    """Go ignores a dependency's replace directives; ours must make the same choices, or say
    in go.mod why not (a module the module proxy does not serve)."""
    upstream = gobuild.module_dir(knative.TRAEFIK_MODULE, knative.TRAEFIK) / "go.mod"

    def replaces(gomod: Path) -> dict[str, str]:
        text = gomod.read_text()
        lines = re.findall(r"^\s*(?:replace\s+)?(\S+)(?:\s+v\S+)?\s+=>\s+(.+?)\s*$", text, re.M)
        return dict(lines)

    theirs, ours = replaces(upstream), replaces(knative.TRAEFIK_MODULE / "go.mod")
    stood_in = {"github.com/abbot/go-http-auth", "github.com/traefik/traefik/dynamic/ext"}
    assert theirs.keys() <= ours.keys()
    assert {m: ours[m] for m in theirs if m not in stood_in} == {
        m: theirs[m] for m in theirs if m not in stood_in
    }
    assert stood_in <= theirs.keys()  # else a stand-in is left over from an older release


# --- the manifests ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return knative.manifest_docs(domains=DOMAINS, autoscaler=AUTOSCALER)


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def problems(docs: list[dict[str, Any]]) -> list[str]:
    """What would stop the install working on the node: a ko:// reference left unresolved, an
    image no recipe of images() builds (the node pulls nothing), an ingress class that is not
    Traefik's (no KIngress would ever be reconciled)."""
    left = set(re.findall(r"ko://[^\s'\"]+", yaml.safe_dump_all(docs)))
    found = [f"unresolved: {ref}" for ref in sorted(left)]
    unbuilt = knative.images_named(docs) - knative.image_refs().keys()
    found += [f"not built here: {ref}" for ref in sorted(unbuilt)]
    network = find(docs, "ConfigMap", "config-network").get("data", {})
    if network.get("ingress-class") != knative.TRAEFIK_CLASS:
        found.append(f"ingress class: {network.get('ingress-class')}")
    return found


def test_the_manifests_name_no_ko_reference_only_images_built_here_and_traefiks_class(
    docs,
) -> None:
    assert "ko://" not in knative.manifests(domains=DOMAINS)
    # the five components, the queue-proxy sidecar (config-deployment and its Image), Traefik
    assert len(knative.images_named(docs)) == len(knative.SERVING_COMMANDS) + 1
    assert problems(docs) == []


def broken(docs: list[dict[str, Any]], kind: str, name: str, change) -> list[dict[str, Any]]:
    copies = yaml.safe_load_all(yaml.safe_dump_all(docs))
    out = list(copies)
    change(find(out, kind, name))
    return out


def test_a_ko_reference_an_image_not_built_here_or_another_ingress_class_is_caught(
    docs,
) -> None:
    def ko(d):
        d["data"]["queue-sidecar-image"] = "ko://knative.dev/serving/cmd/queue"

    def pulled(d):
        d["spec"]["template"]["spec"]["containers"][0]["image"] = "gcr.io/knative-releases/x:1"

    def istio(d):
        d["data"]["ingress-class"] = "istio.ingress.networking.knative.dev"

    assert problems(broken(docs, "ConfigMap", "config-deployment", ko)) == [
        "unresolved: ko://knative.dev/serving/cmd/queue",
        "not built here: ko://knative.dev/serving/cmd/queue",
    ]
    assert problems(broken(docs, "Deployment", "webhook", pulled)) == [
        "not built here: gcr.io/knative-releases/x:1"
    ]
    assert problems(broken(docs, "ConfigMap", "config-network", istio)) == [
        "ingress class: istio.ingress.networking.knative.dev"
    ]
    # and a ko:// reference to a binary we build no image of stops the rendering itself
    with pytest.raises(ValueError, match=re.escape("ko://knative.dev/serving/cmd/unknown")):
        knative._resolve_ko([{"image": "ko://knative.dev/serving/cmd/unknown"}])


def test_knative_routes_through_traefik_by_the_class_traefik_filters_on(docs) -> None:
    # the class Traefik's Knative provider takes Ingresses of, in its own source
    source = gobuild.module_dir(knative.TRAEFIK_MODULE, knative.TRAEFIK)
    provider = (source / "pkg/provider/kubernetes/knative/kubernetes.go").read_text()
    assert f'traefikIngressClassName = "{knative.TRAEFIK_CLASS}"' in provider
    args = find(docs, "Deployment", "traefik")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert {"--experimental.knative=true", "--providers.knative=true"} <= set(args)


def test_config_domain_has_the_first_domain_for_every_route_and_autoscaler_the_given_keys(
    docs,
) -> None:
    domain = find(docs, "ConfigMap", "config-domain")["data"]
    assert domain[DOMAINS[0]] == ""
    assert yaml.safe_load(domain[DOMAINS[1]]) == {"selector": {knative.DOMAIN_LABEL: DOMAINS[1]}}
    autoscaler = find(docs, "ConfigMap", "config-autoscaler")["data"]
    assert {k: autoscaler[k] for k in AUTOSCALER} == AUTOSCALER
    assert "_example" in autoscaler  # upstream's documentation stays, unchanged


def test_knative_and_traefik_ask_for_little_cpu_on_a_two_cpu_node(docs) -> None:
    def millicores(value: str) -> int:
        return int(value[:-1]) if value.endswith("m") else int(float(value) * 1000)

    requests = {
        d["metadata"]["name"]: millicores(c["resources"]["requests"]["cpu"])
        for d in docs
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert set(requests) == {"activator", "autoscaler", "controller", "webhook", "traefik"}
    assert sum(requests.values()) <= 200  # of 2000m: the shop's ~15 pods need the rest
    deployment = find(docs, "ConfigMap", "config-deployment")["data"]
    assert millicores(deployment["queue-sidecar-cpu-request"]) <= 10
    assert all(
        d["spec"]["maxReplicas"] == 1 for d in docs if d["kind"] == "HorizontalPodAutoscaler"
    )


def test_namespaces_and_crds_come_first_and_the_webhooks_last(docs) -> None:
    kinds = [d["kind"] for d in docs]
    ranks = [knative.rank(d) for d in docs]
    assert ranks == sorted(ranks)
    assert kinds[0] == "Namespace"
    assert kinds[-1].endswith("WebhookConfiguration")
    crds = {d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition"}
    # networking's (which serving's module zip lacks) and caching's are there
    assert {
        "ingresses.networking.internal.knative.dev",
        "certificates.networking.internal.knative.dev",
        "serverlessservices.networking.internal.knative.dev",
        "images.caching.internal.knative.dev",
        "services.serving.knative.dev",
    } <= crds


# --- a real API server admits every object ----------------------------------------------------


@pytest.mark.slow
def test_the_api_server_admits_every_object_of_the_install_by_server_side_apply(
    cp: ControlPlane, docs
) -> None:
    applied = knative.apply(cp, docs)
    assert len(applied) == len(docs)
    stored = cp.kubectl(
        "-n", "knative-serving", "get", "configmap", "config-network", "-o",
        "jsonpath={.data.ingress-class}",
    ).stdout  # fmt: skip
    assert stored == knative.TRAEFIK_CLASS
    # nothing was pruned: the Deployment the server keeps is the one we sent
    sent = find(docs, "Deployment", "traefik")["spec"]["template"]["spec"]["containers"][0]
    kept = cp.kubectl("-n", "traefik", "get", "deployment", "traefik", "-o", "json").stdout
    container = yaml.safe_load(kept)["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == sent["args"]
    assert container["securityContext"] == sent["securityContext"]


@pytest.mark.slow
def test_the_api_server_refuses_a_broken_object(cp: ControlPlane, docs) -> None:
    deployment = yaml.safe_load(yaml.safe_dump(find(docs, "Deployment", "traefik")))
    deployment["metadata"]["name"] = "traefik-broken"
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = 70000
    with pytest.raises(KubectlError, match="containerPort"):
        knative.apply(cp, [deployment])


# --- the conformance suite --------------------------------------------------------------------


def test_the_conformance_suite_asks_for_the_test_images_built_here() -> None:
    argv = knative.conformance_argv(Path("/bin/suite"), Path("/kubeconfig"))
    flags = dict(a.lstrip("-").split("=", 1) for a in argv[1:] if "=" in a)
    assert flags["ingressClass"] == knative.TRAEFIK_CLASS
    assert flags["skip-tests"] == "headers/probe"
    template, tag = flags["imagetemplate"], flags["tag"]
    for name in knative.TEST_IMAGES:
        ref = template.replace("{{.Name}}", name).replace("{{.Tag}}", tag)
        assert knative.image_refs().get(ref) == name


def test_runconformances_tests_are_read_from_the_pinned_suite() -> None:
    tests = knative.suite_tests()
    assert tests["basics"] == tests["headers/probe"] == "stable"
    assert tests["host-rewrite"] == "beta"
    assert tests["httpoption"] == "alpha"
    assert set(knative.UPSTREAM_SKIPS) <= tests.keys()


GO_TEST_OUTPUT = """\
=== RUN   TestIngressConformance
=== RUN   TestIngressConformance/basics
=== PAUSE TestIngressConformance/basics
=== RUN   TestIngressConformance/headers/probe
    run.go:104: Skipping the test in skip-test flag
=== RUN   TestIngressConformance/timeout
=== RUN   TestIngressConformance/grpc
=== CONT  TestIngressConformance/basics
    util.go:1: a line a test logged: --- PASS: not a result
--- FAIL: TestIngressConformance (31.20s)
    --- SKIP: TestIngressConformance/headers/probe (0.00s)
    --- PASS: TestIngressConformance/basics (12.01s)
    --- FAIL: TestIngressConformance/timeout (30.00s)
        --- PASS: TestIngressConformance/timeout/no_delay (0.10s)
FAIL
"""


def test_go_test_output_gives_each_tests_outcome_and_a_test_that_never_ended_fails() -> None:
    outcome = knative.parse_test_output(GO_TEST_OUTPUT)
    assert outcome == {
        "TestIngressConformance": "fail",
        "TestIngressConformance/basics": "pass",
        "TestIngressConformance/headers/probe": "skip",
        "TestIngressConformance/timeout": "fail",
        "TestIngressConformance/timeout/no_delay": "pass",
        "TestIngressConformance/grpc": "fail",  # started, never reported
    }
    result = knative.ConformanceResult(outcome, 1, GO_TEST_OUTPUT)
    # a suite test's own subtests are not suite tests
    assert result.suite() == {
        "basics": "pass",
        "headers/probe": "skip",
        "timeout": "fail",
        "grpc": "fail",
    }
    assert result.named("fail") == ["grpc", "timeout"]


# --- the build --------------------------------------------------------------------------------


def test_build_patched_replaces_a_file_of_a_dependency_without_touching_the_module_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mechanism Traefik's build relies on, on a module of ours: a patched copy of
    dynamic-ext with one more type, which a main package then uses."""
    module = tmp_path / "main"
    shutil.copytree(knative.TRAEFIK_MODULE / "dynamic-ext", tmp_path / "ext")
    module.mkdir()
    (module / "go.mod").write_text(
        "module example.test/main\n\ngo 1.24.0\n\n"
        "require github.com/traefik/traefik/dynamic/ext v0.0.0\n\n"
        "replace github.com/traefik/traefik/dynamic/ext => ../ext\n"
    )
    (module / "go.sum").write_text("")
    (module / "main.go").write_text(
        'package main\n\nimport "github.com/traefik/traefik/dynamic/ext"\n\n'
        "func main() { _ = ext.Added{} }\n"
    )
    # the binaries in a cache of the test's own; Go's build cache stays the machine's
    gocache = subprocess.run(
        [gobuild.go_binary(), "env", "GOCACHE"], capture_output=True, text=True
    )
    monkeypatch.setenv("GOCACHE", gocache.stdout.strip())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    added = tmp_path / "added.go"
    added.write_text("package ext\n\n// Added is the patch's.\ntype Added struct{}\n")
    with pytest.raises(RuntimeError, match=re.escape("undefined: ext.Added")):
        gobuild.build(module, ".", "patch-test-plain", cgo=False)
    # a local replace is its own copy here; module_dir() finds that copy
    built = gobuild.build_patched(
        module, ".", "patch-test",
        patches={"github.com/traefik/traefik/dynamic/ext": {"added.go": added}}, cgo=False,
    )  # fmt: skip
    assert built.is_file()
    assert not (tmp_path / "ext" / "added.go").exists()

"""Knative Serving and its ingress on the project's node, from the pinned Go modules.

Serving v1.23 (`knative.dev/serving` in tools/upstream/knative, the versions of
tools/upstream/validate-knative) and, for an ingress that needs no Envoy, Traefik's Knative
provider (tools/upstream/traefik), which implements KIngress itself. Every binary is built here
(devtools/gobuild.py) and packed like ko packs it (images.static_binary); every manifest is read
from the modules in Go's module cache at run time, with the changes an operator of one small
node makes, each named below:

- the `ko://<import path>` images become `ko.local/<import path>:<module version>` (Knative
  resolves no tag of ko.local to a digest, and the node has them already);
- config-network selects Traefik's ingress class, config-domain holds the given domains,
  config-autoscaler any keys given (the live tests shorten its windows);
- CPU requests are lowered to fit two CPUs (SMALL_NODE_CPU), and the HPAs keep one replica;
- Traefik: its namespace, ServiceAccount, RBAC, Deployment and public and private Services,
  written here from its documentation (docs/content/reference/.../knative.md) and the flags its
  own conformance run uses (integration/fixtures/knative/02-traefik.yml).

Knative's KIngress conformance suite (knative.dev/networking/test/conformance/ingress) is a
`go test -c` binary of tools/upstream/knative/conformance; run_conformance() runs it against a
cluster and says which tests passed.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from devtools import gobuild, upstream
from devtools.cluster import images as oci
from devtools.cluster.node import APISERVER_PORT, NODE_IP, Node

KNATIVE_MODULE = upstream.TOOLS / "knative"
TRAEFIK_MODULE = upstream.TOOLS / "traefik"

SERVING = "knative.dev/serving"
NETWORKING = "knative.dev/networking"
CACHING = "knative.dev/caching"
TRAEFIK = "github.com/traefik/traefik/v3"

# Knative Serving's binaries (knative.dev/serving/cmd/<name>), named as ko names them.
SERVING_COMMANDS = ("controller", "webhook", "autoscaler", "activator", "queue")
# The images the conformance suite runs (knative.dev/networking/test/test_images/<name>).
TEST_IMAGES = ("runtime", "httpproxy", "retry", "timeout", "wsserver", "grpc-ping")
TEST_IMAGES_PACKAGE = f"{NETWORKING}/test/test_images"

SYSTEM_NAMESPACE = "knative-serving"
TRAEFIK_CLASS = "traefik.ingress.networking.knative.dev"
TRAEFIK_NAMESPACE = "traefik"
TRAEFIK_PUBLIC_SERVICE = "traefik"
TRAEFIK_PRIVATE_SERVICE = "privtraefik"
TRAEFIK_VERSION = upstream.required_version(TRAEFIK_MODULE, TRAEFIK)
TRAEFIK_IMAGE = f"docker.io/traefik/traefik:{TRAEFIK_VERSION}"
TRAEFIK_PATH = "/traefik"  # where Traefik's own image has it (its Dockerfile)

# What magic DNS gives a cluster whose ingress answers at 127.0.0.1: from this machine the
# ingress is the forward on 127.0.0.1 (var/cluster/ingress). Alphabetically before example.com
# (istio/domain), so it stays Knative's choice when both are in config-domain.
DEFAULT_DOMAINS = ("127.0.0.1.sslip.io",)
# A domain after the first is given to the routes (Knative Services) with this label.
DOMAIN_LABEL = "cqrs-shop/domain"

# CPU requests on a node of two CPUs that also runs CoreDNS (100m), PostgreSQL (100m) and up
# to ~15 pods of the shop (100m each, plus queue-proxy). Upstream asks 300m for the activator
# and 100m for each of the others, and 25m for each queue-proxy: 600m + 15 x 125m is more than
# the node has. These are scheduling weights only; the limits stay upstream's.
SMALL_NODE_CPU = {
    "activator": "25m",
    "autoscaler": "25m",
    "controller": "25m",
    "webhook": "25m",
    "traefik": "25m",
}
QUEUE_PROXY_CPU = "10m"  # config-deployment's queue-sidecar-cpu-request (upstream 25m)

# The conformance tests Traefik's own run skips (integration/knative_conformance_test.go):
# Traefik does not answer Knative's probe requests with the KIngress hash.
UPSTREAM_SKIPS = ("headers/probe",)
CONFORMANCE_TEST = "TestIngressConformance"


def _version(module: str) -> str:
    return upstream.required_version(KNATIVE_MODULE, module)


# --- binaries and images ----------------------------------------------------------------------


def _importpath(name: str) -> str:
    if name in SERVING_COMMANDS:
        return f"{SERVING}/cmd/{name}"
    if name in TEST_IMAGES:
        return f"{TEST_IMAGES_PACKAGE}/{name}"
    raise ValueError(f"{name} is neither a Serving command nor a conformance test image")


def knative_binary(name: str) -> Path:
    """One of SERVING_COMMANDS or TEST_IMAGES, static (they run FROM scratch)."""
    minutes = 5 if name == "controller" else 2
    return gobuild.build(
        KNATIVE_MODULE, _importpath(name), f"knative-{name}", cgo=False, first_run_minutes=minutes
    )


def traefik_binary() -> Path:
    """Traefik, static, with two dependencies patched (tools/upstream/traefik/go.mod says why):
    lego without its DNS-01 providers, go-http-auth v0.4.0 with the two functions of the fork
    Traefik names."""
    patches = TRAEFIK_MODULE / "patches"
    return gobuild.build_patched(
        TRAEFIK_MODULE,
        f"{TRAEFIK}/cmd/traefik",
        "traefik",
        patches={
            "github.com/go-acme/lego/v5": {
                "providers/dns/zz_gen_dns_providers.go": patches / "lego_dns_providers.go"
            },
            "github.com/abbot/go-http-auth": {"traefik_fork.go": patches / "go_http_auth_fork.go"},
        },
        ldflags=[f"-X={TRAEFIK}/pkg/version.Version={TRAEFIK_VERSION}"],
        cgo=False,
        first_run_minutes=11,
    )


def conformance_binary() -> Path:
    """Knative's KIngress conformance suite, a test binary of tools/upstream/knative/conformance."""
    return gobuild.test_binary(
        KNATIVE_MODULE,
        "./conformance",
        "knative-ingress-conformance",
        cgo=False,
        first_run_minutes=3,
    )


def binaries() -> dict[str, Path]:
    """Every binary Knative, its ingress and the conformance run need, built on first use:
    the SERVING_COMMANDS and TEST_IMAGES by name, "traefik" and "conformance"."""
    built = {name: knative_binary(name) for name in (*SERVING_COMMANDS, *TEST_IMAGES)}
    built["traefik"] = traefik_binary()
    built["conformance"] = conformance_binary()
    return built


def image_ref(name: str) -> str:
    """The image of a Serving command or test image, as the manifests name it."""
    module = SERVING if name in SERVING_COMMANDS else NETWORKING
    return f"ko.local/{_importpath(name)}:{_version(module)}"


def image_refs() -> dict[str, str]:
    """Every image images() builds: its reference and the binary (a key of binaries()) in it."""
    refs = {image_ref(name): name for name in (*SERVING_COMMANDS, *TEST_IMAGES)}
    refs[TRAEFIK_IMAGE] = "traefik"
    return refs


def images() -> list[oci.Image]:
    """The images of image_refs(), as ko packs them: the binary at /ko-app/<name> on distroless
    static, nonroot; Traefik's where its own image has it."""
    packed = []
    for ref, name in image_refs().items():
        if name == "traefik":
            packed.append(oci.static_binary(ref, traefik_binary(), TRAEFIK_PATH))
        else:
            packed.append(oci.static_binary(ref, knative_binary(name), f"/ko-app/{name}"))
    return packed


# --- manifests --------------------------------------------------------------------------------

Doc = dict[str, Any]


def _read_docs(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def upstream_docs() -> list[Doc]:
    """Knative's own install, as its release assembles it: the networking CRDs and
    config-network (knative.dev/networking's config/, which serving's config/core links to and
    its module zip therefore lacks), the caching Image CRD, then serving's config/core in file
    order. Unchanged: images still ko://."""
    networking = gobuild.module_dir(KNATIVE_MODULE, NETWORKING) / "config"
    caching = gobuild.module_dir(KNATIVE_MODULE, CACHING) / "config" / "image.yaml"
    core = gobuild.module_dir(KNATIVE_MODULE, SERVING) / "config" / "core"
    files = [*sorted(networking.glob("*.yaml")), caching, *sorted(core.rglob("*.yaml"))]
    docs = [doc for path in files for doc in _read_docs(path)]
    if not any(d["kind"] == "Deployment" for d in docs):
        raise RuntimeError(f"no Deployments in {core}: is the module's layout what it was?")
    return docs


# An image ko builds: ko://<import path> (the release manifests' references).
KO_REFERENCE = re.compile(r"ko://([A-Za-z0-9._/-]+)")


def _ko_local(match: re.Match[str]) -> str:
    path = match.group(1)
    name = path.rsplit("/", 1)[-1]
    if name not in (*SERVING_COMMANDS, *TEST_IMAGES) or _importpath(name) != path:
        raise ValueError(f"{match.group(0)} is not an image this module builds")
    return image_ref(name)


def _resolve_ko(docs: list[Doc]) -> list[Doc]:
    """Every ko:// reference, wherever it is (images, config-deployment, the Image cache)."""
    text = KO_REFERENCE.sub(_ko_local, json.dumps(docs))
    return json.loads(text)


def _find(docs: Iterable[Doc], kind: str, name: str) -> Doc:
    for doc in docs:
        if doc.get("kind") == kind and doc["metadata"]["name"] == name:
            return doc
    raise RuntimeError(f"no {kind} {name} in Knative's manifests")


def _domain_data(domains: Sequence[str]) -> dict[str, str]:
    if not domains:
        raise ValueError("config-domain needs at least one domain")
    data = {domains[0]: ""}  # no selector: every route's, unless another selects it
    for domain in domains[1:]:
        # Knative gives a route the most specific matching domain, ties to the first in
        # alphabetical order: with a selector, only the labelled routes take this one.
        data[domain] = yaml.safe_dump({"selector": {DOMAIN_LABEL: domain}})
    return data


def _configure(
    docs: list[Doc], domains: Sequence[str], autoscaler: Mapping[str, str] | None
) -> None:
    def data(name: str) -> dict[str, str]:
        found = _find(docs, "ConfigMap", name)
        return found.setdefault("data", {})

    data("config-network")["ingress-class"] = TRAEFIK_CLASS
    data("config-domain").update(_domain_data(domains))
    data("config-autoscaler").update(dict(autoscaler or {}))
    data("config-deployment")["queue-sidecar-cpu-request"] = QUEUE_PROXY_CPU
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind == "Deployment" and name in SMALL_NODE_CPU:
            for container in doc["spec"]["template"]["spec"]["containers"]:
                if container["name"] == name:
                    container["resources"]["requests"]["cpu"] = SMALL_NODE_CPU[name]
        elif kind == "HorizontalPodAutoscaler":
            # Their target is 100% of the CPU request: with a request 4 to 12 times smaller,
            # a busy minute would scale out to their maxima (20 and 5) on one node.
            doc["spec"]["maxReplicas"] = doc["spec"]["minReplicas"]


def _labels(component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "traefik",
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/version": TRAEFIK_VERSION,
    }


# Traefik's entry points: the Services' ports 80 and 443 reach them, so the pod binds none
# below 1024 and runs as the image's nonroot user with no capability.
_ENTRYPOINTS = {"web": 8080, "websecure": 8443, "privweb": 8081, "privwebsecure": 8444}
_PING_PORT = 9000


def traefik_docs() -> list[Doc]:
    """Traefik as the KIngress implementation: what its documentation has an operator install."""
    ns, sa = TRAEFIK_NAMESPACE, "traefik"
    selector = {"app.kubernetes.io/name": "traefik"}
    args = [
        # nothing leaves the node, and nothing should try
        "--global.checknewversion=false",
        "--global.sendanonymoususage=false",
        *(f"--entrypoints.{name}.address=:{port}" for name, port in _ENTRYPOINTS.items()),
        # A header named X_Auth_User reaches a WSGI app (the shop's roles) as X-Auth-User
        # would: Traefik drops such aliases, as its v3.7.12 notes advise for these backends.
        *(
            f"--entrypoints.{n}.http.aliasHeadersStrategy=delete"
            for n in [*_ENTRYPOINTS, "traefik"]
        ),
        f"--entrypoints.traefik.address=:{_PING_PORT}",
        "--ping=true",
        "--log.level=INFO",
        "--experimental.knative=true",
        "--providers.knative=true",
        "--providers.knative.publicEntrypoints=web,websecure",
        f"--providers.knative.publicService.namespace={ns}",
        f"--providers.knative.publicService.name={TRAEFIK_PUBLIC_SERVICE}",
        "--providers.knative.privateEntrypoints=privweb,privwebsecure",
        f"--providers.knative.privateService.namespace={ns}",
        f"--providers.knative.privateService.name={TRAEFIK_PRIVATE_SERVICE}",
        # Traefik marks a KIngress ready this long after handing its routes to the proxy, not
        # after probing them. Its own conformance run has 2 s; on two busy CPUs the new
        # routes were at times not serving yet (502s in the suite's `update`, about one run
        # in two under CI's load): 5 s.
        "--providers.knative.throttleDuration=5s",
    ]
    probe = {"httpGet": {"path": "/ping", "port": "ping"}, "periodSeconds": 5}
    container = {
        "name": "traefik",
        "image": TRAEFIK_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "ports": [
            *({"name": n, "containerPort": p} for n, p in _ENTRYPOINTS.items()),
            {"name": "ping", "containerPort": _PING_PORT},
        ],
        "readinessProbe": probe,
        "livenessProbe": {**probe, "failureThreshold": 6},
        "resources": {
            "requests": {"cpu": SMALL_NODE_CPU["traefik"], "memory": "64Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }

    def service(name: str, web: str, websecure: str, **spec: Any) -> Doc:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "labels": _labels("ingress")},
            "spec": {
                **spec,
                "selector": selector,
                "ports": [
                    {"name": "http", "port": 80, "targetPort": web},
                    {"name": "https", "port": 443, "targetPort": websecure},
                ],
            },
        }

    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": sa, "namespace": ns, "labels": _labels("ingress")},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "traefik-knative-ingress", "labels": _labels("ingress")},
            # What its Knative provider watches and writes (pkg/provider/kubernetes/knative):
            # Services for their ClusterIPs, Secrets for the KIngresses' TLS, in every namespace.
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["services", "secrets"],
                    "verbs": ["get", "list", "watch"],
                },
                {
                    "apiGroups": ["networking.internal.knative.dev"],
                    "resources": ["ingresses"],
                    "verbs": ["get", "list", "watch"],
                },
                {
                    "apiGroups": ["networking.internal.knative.dev"],
                    "resources": ["ingresses/status"],
                    "verbs": ["update"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "traefik-knative-ingress", "labels": _labels("ingress")},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "traefik-knative-ingress",
            },
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}],
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "traefik", "namespace": ns, "labels": _labels("ingress")},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": {**selector, **_labels("ingress")}},
                    "spec": {
                        "serviceAccountName": sa,
                        "containers": [container],
                        "volumes": [{"name": "tmp", "emptyDir": {}}],
                    },
                },
            },
        },
        # Public: a NodePort, the shape Knative's conformance suite reaches with
        # --ingressendpoint (the node has no load balancer); private: cluster-local routes.
        service(TRAEFIK_PUBLIC_SERVICE, "web", "websecure", type="NodePort"),
        service(TRAEFIK_PRIVATE_SERVICE, "privweb", "privwebsecure"),
    ]


def rank(doc: Doc) -> int:
    # Namespaces and CRDs before what lives in them; the webhooks last, so that nothing
    # before them needs the webhook to be running (their policy is Fail).
    kind = doc["kind"]
    if kind == "Namespace":
        return 0
    if kind == "CustomResourceDefinition":
        return 1
    if kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        return 3
    return 2


def manifest_docs(
    *, domains: Sequence[str], autoscaler: Mapping[str, str] | None = None
) -> list[Doc]:
    docs = _resolve_ko(upstream_docs())
    _configure(docs, domains, autoscaler)
    return sorted([*docs, *traefik_docs()], key=rank)  # stable: file order within a rank


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the ConfigMaps' _example blocks) as literal blocks, as upstream's
    files have them: readable, and still byte for byte what they were (their checksum is
    checked by Knative's webhook)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True  # a dict used twice (a probe) is written out twice, not as an anchor


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def manifests(*, domains: Sequence[str], autoscaler: Mapping[str, str] | None = None) -> str:
    """The multi-document YAML that installs Knative Serving with Traefik as its ingress."""
    docs = manifest_docs(domains=domains, autoscaler=autoscaler)
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, width=100)


def images_named(docs: Iterable[Doc]) -> set[str]:
    """Every image reference in the manifests: the containers' and config-deployment's
    queue-sidecar-image, and the caching Images'."""
    found: set[str] = set()

    def walk(value: Any, key: str = "") -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, k)
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif isinstance(value, str) and key in ("image", "queue-sidecar-image"):
            found.add(value)

    walk(list(docs))
    return found


# --- installing -------------------------------------------------------------------------------


class Cluster(Protocol):
    """What install() needs: the node's, or the tests' control plane's, kubectl."""

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]: ...


FIELD_MANAGER = "cqrs-cluster"


def apply(cluster: Cluster, docs: Sequence[Doc], *, timeout: float = 120.0) -> list[str]:
    """Server-side applies `docs`: namespaces and CRDs first, until every CRD is served, then
    all of them. Returns what kubectl applied (kind.group/name). Again: changes nothing."""
    ssa = ("apply", "--server-side", "--force-conflicts", f"--field-manager={FIELD_MANAGER}")
    first = [d for d in docs if rank(d) < 2]
    if first:
        cluster.kubectl(*ssa, "-f", "-", input=_json_stream(first), timeout=timeout)
    crds = [d["metadata"]["name"] for d in first if d["kind"] == "CustomResourceDefinition"]
    if crds:
        cluster.kubectl(
            "wait", "--for=condition=Established", f"--timeout={timeout:.0f}s",
            *(f"customresourcedefinition/{name}" for name in crds), timeout=timeout + 30,
        )  # fmt: skip
    done = cluster.kubectl(*ssa, "-o", "name", "-f", "-", input=_json_stream(docs), timeout=timeout)
    return done.stdout.split()


def _json_stream(docs: Sequence[Doc]) -> str:
    return "\n".join(json.dumps(d) for d in docs)  # kubectl reads concatenated JSON objects


def install(
    cluster: Cluster,
    *,
    domains: Sequence[str] = DEFAULT_DOMAINS,
    autoscaler: Mapping[str, str] | None = None,
    timeout: float = 300.0,
) -> None:
    """Knative Serving and Traefik on a cluster whose node has their images (images()), until
    every Deployment of both is rolled out."""
    apply(cluster, manifest_docs(domains=domains, autoscaler=autoscaler))
    rolled_out(cluster, (SYSTEM_NAMESPACE, TRAEFIK_NAMESPACE), timeout)


def rolled_out(cluster: Cluster, namespaces: Sequence[str], timeout: float) -> None:
    """Waits, `timeout` in all, until every Deployment of `namespaces` is rolled out."""
    deadline = time.monotonic() + timeout
    for namespace in namespaces:
        left = max(deadline - time.monotonic(), 10.0)
        cluster.kubectl(
            "-n", namespace, "rollout", "status", "deployment", f"--timeout={left:.0f}s",
            timeout=left + 30,
        )  # fmt: skip


def ingress_address(cluster: Cluster, node_ip: str | None = None) -> tuple[str, int]:
    """Where Traefik's public HTTP entry point answers inside the node's network namespace:
    the node's address and the public Service's node port."""
    port = cluster.kubectl(
        "-n", TRAEFIK_NAMESPACE, "get", "service", TRAEFIK_PUBLIC_SERVICE,
        "-o", "jsonpath={.spec.ports[?(@.name=='http')].nodePort}",
    ).stdout.strip()  # fmt: skip
    return node_ip or NODE_IP, int(port)


# --- Knative's KIngress conformance suite -----------------------------------------------------


def suite_tests() -> dict[str, str]:
    """RunConformance's tests (knative.dev/networking's test/conformance/ingress/run.go): each
    name and its level, "stable", "beta" (-enable-beta) or "alpha" (-enable-alpha)."""
    run_go = gobuild.module_dir(KNATIVE_MODULE, NETWORKING) / "test/conformance/ingress/run.go"
    text = run_go.read_text(encoding="utf-8")
    found = {}
    for level in ("stable", "beta", "alpha"):
        block = re.search(
            rf"var {level}Tests = map\[string\]func\(t \*testing.T\)\{{(.*?)\n\}}", text, re.S
        )
        if not block:
            raise RuntimeError(f"no {level}Tests in {run_go}: has RunConformance changed?")
        for name in re.findall(r'^\s*"([^"]+)":', block.group(1), re.M):
            found[name] = level
    return found


_RESULT = re.compile(r"^\s*--- (PASS|FAIL|SKIP): (\S+) \(")
_RUN = re.compile(r"^=== RUN\s+(\S+)")


def parse_test_output(text: str) -> dict[str, str]:
    """Each test's outcome in `go test -test.v` output: "pass", "fail" or "skip"; a test that
    started and never reported (the binary died, or timed out) is "fail"."""
    outcome: dict[str, str] = {}
    for line in text.splitlines():
        if found := _RUN.match(line):
            outcome.setdefault(found.group(1), "fail")
        elif found := _RESULT.match(line):
            outcome[found.group(2)] = found.group(1).lower()
    return outcome


@dataclass
class ConformanceResult:
    outcome: dict[str, str]  # test name (TestIngressConformance/<name>[/...]): pass/fail/skip
    returncode: int
    output: str = field(repr=False)

    def suite(self) -> dict[str, str]:
        """The outcome of each of RunConformance's own tests, by its name there ("basics",
        "headers/probe"; their names hold slashes, so they are looked up, not split off)."""
        prefix = f"{CONFORMANCE_TEST}/"
        return {
            name: self.outcome[prefix + name]
            for name in suite_tests()
            if prefix + name in self.outcome
        }

    def named(self, status: str) -> list[str]:
        return sorted(name for name, s in self.suite().items() if s == status)


# The suite's image names (knative.dev/pkg/test's -imagetemplate), filled in with each test
# image's name and -tag: the references image_refs() builds.
IMAGE_TEMPLATE = f"ko.local/{TEST_IMAGES_PACKAGE}/{{{{.Name}}}}:{{{{.Tag}}}}"
TEST_NAMESPACE = "serving-tests"  # knative.dev/networking/test's ServingNamespace


def conformance_argv(
    binary: Path,
    kubeconfig: Path,
    *,
    server: str | None = None,
    ingress_endpoint: str = NODE_IP,
    skip: Sequence[str] = UPSTREAM_SKIPS,
    run: str | None = None,
    beta: bool = False,
    alpha: bool = False,
    parallel: int = 4,
    timeout: float = 3600.0,
) -> list[str]:
    """The command line of the conformance binary, with Traefik's ingress class (the flags are
    knative.dev/networking/test's and knative.dev/pkg/test's; run_conformance says what each
    argument means)."""
    return [
        str(binary),
        "-test.v",
        f"-test.timeout={timeout:.0f}s",
        f"-test.parallel={parallel}",
        *([f"-test.run={run}"] if run else []),
        f"-kubeconfig={kubeconfig}",
        *([f"-server={server}"] if server else []),
        f"-ingressClass={TRAEFIK_CLASS}",
        f"-ingressendpoint={ingress_endpoint}",
        f"-imagetemplate={IMAGE_TEMPLATE}",
        f"-tag={_version(NETWORKING)}",
        *([f"-skip-tests={','.join(skip)}"] if skip else []),
        *(["-enable-beta"] if beta else []),
        *(["-enable-alpha"] if alpha else []),
    ]


def run_conformance(
    kubeconfig: Path,
    *,
    wrap: Callable[[list[str]], list[str]] = list,
    server: str | None = None,
    timeout: float = 3600.0,
    **suite: Any,
) -> ConformanceResult:
    """Knative's KIngress conformance suite against the cluster of `kubeconfig`, with Traefik's
    ingress class: each test's outcome.

    `wrap` turns an argv into one that runs where the cluster's Services are reached, e.g.
    `lambda argv: node.inside(*argv)` (the node's network namespace); `server` overrides the
    kubeconfig's API server address there. `suite` holds conformance_argv's other options:
    `ingress_endpoint`, the address whose node ports reach the ingress (the node's); `skip`,
    tests of RunConformance to skip; `run`, a -test.run pattern (e.g.
    "TestIngressConformance/basics$"); `beta`/`alpha`, to add those tests; `parallel`.
    The suite creates its objects in TEST_NAMESPACE, which is created first if missing.
    """
    binary = conformance_binary()
    kubectl = [
        upstream.kubectl(),
        f"--kubeconfig={kubeconfig}",
        *([f"--server={server}"] if server else []),
    ]
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": TEST_NAMESPACE}}
    subprocess.run(
        wrap([*kubectl, "apply", "-f", "-"]), input=json.dumps(namespace), text=True,
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    argv = conformance_argv(binary, kubeconfig, server=server, timeout=timeout, **suite)
    done = subprocess.run(wrap(argv), capture_output=True, text=True, timeout=timeout + 120)
    output = done.stdout + done.stderr
    return ConformanceResult(parse_test_output(output), done.returncode, output)


def run_conformance_on_node(node: Node, **options: Any) -> ConformanceResult:
    """run_conformance() on the project's node: inside its network and mount namespaces
    (Node.inside), where the API server is at the node's address and the ingress at its node
    ports. `options` are run_conformance's (skip, run, beta, alpha, parallel, timeout)."""
    return run_conformance(
        node.kubeconfig,
        wrap=lambda argv: node.inside(*argv),
        server=f"https://{NODE_IP}:{APISERVER_PORT}",
        **options,
    )

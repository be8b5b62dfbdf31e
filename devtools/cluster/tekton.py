"""Tekton Pipelines and Triggers on the project's node, from the pinned Go modules.

`github.com/tektoncd/pipeline` and `github.com/tektoncd/triggers` at the versions of
tools/upstream/tekton (the ones tools/upstream/validate-tekton checks the manifests with). Every
binary is built here (devtools/gobuild.py) and packed like ko packs it (images.static_binary);
the manifests are the modules' own `config/` folders, read from Go's module cache at run time,
as each project's release assembles them, with the changes an operator of one small, offline
node makes, each named below:

- the `ko://<import path>` images become `ko.local/<import path>:<module version>`, as for
  Knative (the node has them, and nothing resolves ko.local tags to digests);
- the shell image (the `place-scripts` init container of a Task with a `script`), which the
  release pins by digest on cgr.dev, is SHELL_IMAGE, built here from Debian's busybox;
- the remote resolvers' image has what their release's `tini-git` base gives them (their
  Deployment runs /sbin/tini): Debian's tini and git;
- CPU requests are lowered to fit two CPUs (SMALL_NODE_CPU), and the webhook's HPA keeps one
  replica.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from devtools import gobuild, upstream
from devtools.cluster import images as oci
from devtools.cluster import knative

TEKTON_MODULE = upstream.TOOLS / "tekton"
PIPELINE = "github.com/tektoncd/pipeline"
TRIGGERS = "github.com/tektoncd/triggers"

# Each project's commands (<module>/cmd/<name>): its components' images, and for Pipelines the
# images a TaskRun's pod is made of, for Triggers the EventListener's sink.
COMMANDS = {
    PIPELINE: (
        "controller", "webhook", "events", "resolvers",
        "entrypoint", "nop", "workingdirinit", "sidecarlogresults",
    ),
    TRIGGERS: ("controller", "webhook", "interceptors", "eventlistenersink"),
}  # fmt: skip
# Each project's config/ folders, in the order of its release's install.
CONFIG = {
    PIPELINE: ("", "100-namespace", "300-crds", "resolvers"),
    TRIGGERS: ("", "interceptors"),
}
# Where their Deployments run.
NAMESPACES = ("tekton-pipelines", "tekton-pipelines-resolvers")
SHELL_IMAGE = "ko.local/tekton-shell:busybox"

SMALL_NODE_CPU = "25m"  # upstream asks 100m of each component; the limits stay upstream's


def version(module: str) -> str:
    return upstream.required_version(TEKTON_MODULE, module)


def _command(module: str, name: str) -> str:
    if name not in COMMANDS.get(module, ()):
        raise ValueError(f"{name} is not a command of {module} built here")
    return f"{module}/cmd/{name}"


def binary(module: str, name: str) -> Path:
    """One of COMMANDS, static (the images are FROM scratch)."""
    big = name in ("controller", "webhook", "resolvers", "interceptors", "eventlistenersink")
    return gobuild.build(
        TEKTON_MODULE, _command(module, name), f"tekton-{module.rsplit('/', 1)[1]}-{name}",
        cgo=False, first_run_minutes=6 if big else 2,
    )  # fmt: skip


def builds() -> list[tuple[str, str]]:
    """Every (module, command) built for the node."""
    return [(module, name) for module, names in COMMANDS.items() for name in names]


def image_ref(module: str, name: str) -> str:
    return f"ko.local/{_command(module, name)}:{version(module)}"


def shell_image() -> oci.Image:
    """Debian's static busybox with its applets linked, as root: the place-scripts container
    writes the scripts into a volume the steps share (upstream's note: it must allow root)."""
    dockerfile = f"""\
# {SHELL_IMAGE}: stands in for cgr.dev/chainguard/busybox (devtools/cluster/tekton.py)
ARG BASE
# hadolint ignore=DL3006
FROM ${{BASE}} AS debian
# hadolint ignore=DL3008
RUN apt-get update -q \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends busybox-static \\
 && mkdir -p /out/bin /out/tmp && chmod 1777 /out/tmp \\
 && cp /bin/busybox /out/bin/busybox \\
 && for applet in $(/bin/busybox --list); do ln -s busybox /out/bin/$applet; done
FROM scratch
COPY --from=debian /out/ /
ENV PATH=/bin
ENTRYPOINT ["/bin/sh"]
"""
    return oci.Image(SHELL_IMAGE, dockerfile, base="bookworm")


def image_refs() -> list[str]:
    """Every image images() builds (without building it)."""
    return [*(image_ref(m, n) for m, n in builds()), SHELL_IMAGE]


def resolvers_image() -> oci.Image:
    """The remote resolvers on what the release's .ko.yaml gives them, tini and git (its
    `tini-git` base): Debian's, the binary at /ko-app/resolvers, the nonroot user."""
    ref = image_ref(PIPELINE, "resolvers")
    dockerfile = f"""\
# {ref}: the resolvers on Debian's tini and git (devtools/cluster/tekton.py)
ARG BASE
# hadolint ignore=DL3006
FROM ${{BASE}}
# hadolint ignore=DL3008
RUN apt-get update -q \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends tini git \\
 && apt-get clean && rm -rf /var/lib/apt/lists/* \\
 && ln -s /usr/bin/tini /sbin/tini \\
 && groupadd --gid 65532 nonroot \\
 && useradd --uid 65532 --gid 65532 --create-home --shell /usr/sbin/nologin nonroot
COPY app /ko-app/resolvers
ENV KO_DATA_PATH=/var/run/ko
USER 65532:65532
ENTRYPOINT ["/sbin/tini", "--", "/ko-app/resolvers"]
"""
    return oci.Image(ref, dockerfile, {"app": binary(PIPELINE, "resolvers")}, base="bookworm")


def images() -> list[oci.Image]:
    """The components' and the pods' images, as ko packs them (the resolvers on tini and
    git), and the shell image."""
    packed = [
        oci.static_binary(image_ref(m, n), binary(m, n), f"/ko-app/{n}")
        for m, n in builds()
        if (m, n) != (PIPELINE, "resolvers")
    ]
    return [*packed, resolvers_image(), shell_image()]


# --- manifests --------------------------------------------------------------------------------

Doc = knative.Doc


def upstream_docs() -> list[Doc]:
    """Tekton's own install, as its releases assemble it: Pipelines' config/, then Triggers',
    each folder in file order. Unchanged: images still ko://."""
    docs: list[Doc] = []
    for module, folders in CONFIG.items():
        config = gobuild.module_dir(TEKTON_MODULE, module) / "config"
        for folder in folders:
            for path in sorted((config / folder).glob("*.yaml")):
                docs += [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
        if not any(d["kind"] == "Deployment" for d in docs):
            raise RuntimeError(f"no Deployments in {config}: is the module's layout what it was?")
    return docs


def _ko_local(match: re.Match[str]) -> str:
    module, _, name = match.group(1).partition("/cmd/")
    try:
        return image_ref(module, name)
    except ValueError:
        raise ValueError(f"{match.group(0)} is not an image built here") from None


def manifest_docs() -> list[Doc]:
    docs = json.loads(knative.KO_REFERENCE.sub(_ko_local, json.dumps(upstream_docs())))
    for doc in docs:
        kind = doc["kind"]
        if kind == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                args = container.get("args", [])
                if "-shell-image" in args:
                    args[args.index("-shell-image") + 1] = SHELL_IMAGE
                requests = container.get("resources", {}).get("requests", {})
                if "cpu" in requests:
                    requests["cpu"] = SMALL_NODE_CPU
        elif kind == "HorizontalPodAutoscaler":
            doc["spec"]["maxReplicas"] = doc["spec"]["minReplicas"]
    return sorted(docs, key=knative.rank)


def install(cluster: knative.Cluster, *, timeout: float = 300.0) -> None:
    """Tekton Pipelines and Triggers on a cluster whose node has their images (images()),
    until every Deployment of theirs is rolled out."""
    knative.apply(cluster, manifest_docs())
    knative.rolled_out(cluster, NAMESPACES, timeout)

"""Cluster DNS: CoreDNS, from the add-on manifest of the pinned Kubernetes release.

The manifest is `cluster/addons/dns/coredns/coredns.yaml.base` of the `k8s.io/kubernetes` module
(read from the module cache), with its three placeholders filled in as the release's own sed
script does. One change: the Corefile's `forward` block goes, as the node has no DNS beyond the
cluster's (a name outside cluster.local is refused at once instead of timing out).
"""

from __future__ import annotations

import re

from devtools import gobuild, upstream
from devtools.cluster import images
from devtools.cluster.node import CLUSTER_DOMAIN, DNS_SERVICE_IP, Node

VERSION = upstream.required_version(upstream.TOOLS / "coredns", "github.com/coredns/coredns")
IMAGE = f"registry.k8s.io/coredns/coredns:{VERSION}"
# kubeadm's limit for CoreDNS (cmd/kubeadm/app/phases/addons/dns)
MEMORY_LIMIT = "170Mi"


def image() -> images.Image:
    # root, where the upstream image runs as nonroot with a file capability to bind port 53:
    # an image packed FROM scratch carries no file capabilities.
    return images.static_binary(IMAGE, upstream.coredns(), "/coredns", user=0)


def manifest() -> str:
    module = gobuild.module_dir(upstream.TOOLS / "kubernetes", "k8s.io/kubernetes")
    text = (module / "cluster/addons/dns/coredns/coredns.yaml.base").read_text()
    text = (
        text.replace("__DNS__DOMAIN__", CLUSTER_DOMAIN)
        .replace("__DNS__SERVER__", DNS_SERVICE_IP)
        .replace("__DNS__MEMORY__LIMIT__", MEMORY_LIMIT)
    )
    without = re.sub(r"\n( +)forward \. [^\n]*\{\n(?:\1 +[^\n]*\n)*?\1\}", "", text)
    if without == text or "forward" in without:
        raise RuntimeError("the CoreDNS add-on's Corefile has no forward block where expected")
    if IMAGE not in without:
        raise RuntimeError(f"the CoreDNS add-on names another image than {IMAGE}")
    return without


def install(node: Node, timeout: str = "120s") -> None:
    node.kubectl("apply", "-f", "-", input=manifest())
    node.kubectl(
        "-n", "kube-system", "rollout", "status", "deployment/coredns", f"--timeout={timeout}",
        timeout=300,
    )  # fmt: skip

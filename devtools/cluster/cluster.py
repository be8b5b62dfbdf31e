"""Everything on the node, in the order a cluster's operator and then a user would do it.

1. The images: every one the node runs, built here (images.py) and loaded into containerd.
2. The node (node.py) and its DNS (dns.py).
3. Knative Serving with its ingress (knative.py) and Tekton Pipelines (tekton.py), from the
   pinned modules' own manifests.
4. Storage and the database's Secrets (shop.py), then `make deploy`, unchanged.
5. The custom domain of istio/domain, and a forward from this machine to the ingress.

up() returns what a user needs to reach the shop and writes it under var/cluster/: the
kubeconfig, and `ingress`, the 127.0.0.1:PORT where the ingress answers.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from devtools.cluster import dns, images, knative, shop, tekton
from devtools.cluster.node import REPO, Node

# The ingress's Service (Traefik's public entry points) and the address the shop is reached at
# from this machine.
INGRESS_NAMESPACE = knative.TRAEFIK_NAMESPACE
INGRESS_SERVICE = knative.TRAEFIK_PUBLIC_SERVICE
# The custom domain of istio/domain (its config-domain key and its DomainMapping).
CUSTOM_DOMAIN = "example.com"


@dataclass
class Info:
    kubeconfig: Path
    ingress: str
    domains: Sequence[str]
    hosts: Sequence[str]

    def describe(self) -> str:
        lines = [
            f"kubeconfig: {self.kubeconfig}",
            f"ingress:    http://{self.ingress} (var/cluster/ingress)",
            f"domains:    {', '.join(self.domains)}",
            "the shop:",
            *(f'  curl -H "Host: {host}" http://{self.ingress}/api/stats' for host in self.hosts),
        ]
        return "\n".join(lines)


def _step(what: str) -> float:
    print(f"cluster: {what}", file=sys.stderr, flush=True)
    return time.monotonic()


def _done(started: float) -> None:
    print(f"cluster:   {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)


def up() -> Info:
    node = Node()
    image_tag = shop.tag()
    began = _step("images (built here, loaded into the node)")
    archive = node.layout.root / "images.tar"
    node.layout.root.mkdir(parents=True, exist_ok=True)
    with images.Builder() as builder:
        wanted = [*images.stand_ins(), dns.image(), *knative.images(), *tekton.images()]
        builder.build(wanted)
        refs = [image.ref for image in wanted]
        refs += builder.shop_images(shop.REGISTRY, image_tag)
        # by image ID, not name: a stand-in rebuilt under the same name is loaded again
        have = _loaded(node) if node.running() else {}
        missing = sorted(ref for ref in refs if have.get(ref) != builder.image_id(ref))
        if missing:
            builder.save(missing, archive)
    _done(began)
    began = _step("node")
    node.up()
    if missing:
        node.import_images(archive)
        archive.unlink(missing_ok=True)
    dns.install(node)
    _done(began)
    began = _step("Knative Serving and its ingress")
    knative.install(node)
    _done(began)
    began = _step("Tekton Pipelines")
    tekton.install(node)
    _done(began)
    began = _step("the shop: make deploy DATABASE=single")
    shop.storage(node)
    shop.database_secrets(node)
    shop.deploy(node, image_tag)
    # the custom domain, as docs/cluster.md step 8 applies it
    node.kubectl("apply", "-k", str(REPO / "istio" / "domain"))
    _done(began)
    ingress = f"127.0.0.1:{node.forward('ingress', *knative.ingress_address(node))}"
    (node.layout.root / "ingress").write_text(ingress + "\n")
    domains = _domains(node)
    hosts = [f"cqrs-dispatcher.{shop.NAMESPACE}.{domains[0]}"]
    return Info(node.kubeconfig, ingress, domains, hosts)


def down() -> None:
    Node().down()


def _loaded(node: Node) -> dict[str, str]:
    """The node's images and their IDs, under the names `docker save` gives them too."""
    names = {}
    for ref, image_id in node.images().items():
        names[ref] = image_id
        for prefix in ("docker.io/library/", "docker.io/"):
            if ref.startswith(prefix):
                names[ref.removeprefix(prefix)] = image_id
                break
    return names


def _domains(node: Node) -> list[str]:
    data = node.kubectl(
        "-n", "knative-serving", "get", "configmap", "config-domain", "-o", "jsonpath={.data}"
    ).stdout  # fmt: skip
    keys = [k for k in json.loads(data or "{}") if not k.startswith("_")]
    # Knative takes the first in alphabetical order that selects a Service (docs/cluster.md, 8)
    return sorted(keys) or ["svc.cluster.local"]

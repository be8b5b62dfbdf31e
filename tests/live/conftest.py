"""The live tier: the shop deployed with `make deploy` on the project's own Kubernetes node.

The package brings the cluster up (devtools/cluster: `make cluster-up`) unless it is running
already, and takes it down at the end unless it was running before or KEEP_CLUSTER=1. It needs
root (network and mount namespaces, containerd); as anyone else it fails, naming why.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from devtools.cluster import cluster
from devtools.cluster.node import Node
from tests.live.live import Live


@pytest.fixture(scope="package")
def live() -> Iterator[Live]:
    """The cluster for this package only: an idle node still costs a share of the two CPUs,
    which the tiers after this one should have."""
    if os.geteuid() != 0:
        pytest.fail("the live tier runs a Kubernetes node: it needs root", pytrace=False)
    node = Node()
    keep = node.running() or os.environ.get("KEEP_CLUSTER") == "1"
    try:
        info = cluster.up()  # when it runs already: checks and changes nothing
        print(f"\n{info.describe()}", flush=True)
        yield Live(node, info.ingress)
    finally:
        if not keep:  # also when the bring-up failed half-way
            cluster.down()

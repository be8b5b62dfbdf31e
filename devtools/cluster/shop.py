"""The shop on the node, deployed the way a user deploys it (docs/cluster.md, steps 5 and 7).

The database's Secrets are created as step 5 shows, then `make deploy` runs unchanged with
this node's kubeconfig. The node has no storage provisioner, so it gets what an operator of a
bare cluster sets up: a default StorageClass for local volumes and a few local PersistentVolumes
under var/cluster/volumes (removed with the node).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess

from devtools.cluster.node import NODE_NAME, REPO, Node

# Knative skips tag-to-digest resolution for dev.local (registries-skipping-tag-resolving), and
# the images are in the node's containerd already: nothing is ever pulled.
REGISTRY = "dev.local"
NAMESPACE = "cqrs"
# One PostgreSQL pod (DATABASE=single) claims one; CloudNativePG's two clusters, three.
VOLUMES = 4
VOLUME_SIZE = "5Gi"  # knative/postgres/single/postgres.yaml's claim
# What knative/postgres/single/postgres.yaml runs as: the volume is made its own.
POSTGRES_UID = 999


def tag() -> str:
    """The images' tag: the Makefile's default (the commit, 12 hex digits)."""
    done = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True
    )
    return done.stdout.strip() or "dev"


def storage(node: Node) -> None:
    """A default StorageClass with no provisioner and VOLUMES local volumes on the node."""
    folder = node.layout.root / "volumes"
    docs = [
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": "local",
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": "kubernetes.io/no-provisioner",
            # bound when the pod is scheduled, as local volumes must be
            "volumeBindingMode": "WaitForFirstConsumer",
            "reclaimPolicy": "Delete",
        }
    ]
    for index in range(VOLUMES):
        path = folder / f"pv-{index}"
        path.mkdir(parents=True, exist_ok=True)
        # the kubelet applies a pod's fsGroup to a local volume, but its root must be writable
        # by whoever runs first: PostgreSQL's initdb refuses a data folder it does not own
        os.chown(path, POSTGRES_UID, POSTGRES_UID)
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": f"cqrs-node-pv-{index}"},
                "spec": {
                    "capacity": {"storage": VOLUME_SIZE},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": "local",
                    "local": {"path": str(path)},
                    "nodeAffinity": {
                        "required": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {
                                            "key": "kubernetes.io/hostname",
                                            "operator": "In",
                                            "values": [NODE_NAME],
                                        }
                                    ]
                                }
                            ]
                        }
                    },
                },
            }
        )
    node.kubectl("apply", "-f", "-", input="\n".join(_json_docs(docs)))


def _json_docs(docs: list[dict]) -> list[str]:
    return [f"---\n{json.dumps(doc)}" for doc in docs]


def database_secrets(node: Node) -> None:
    """The three Secrets of DATABASE=single, as docs/cluster.md step 5 creates them; kept when
    they exist (a second cluster-up changes nothing)."""
    node.kubectl("apply", "-k", str(REPO / "knative" / "namespace"))
    have = node.kubectl(
        "-n", NAMESPACE, "get", "secret", "cqrs-postgres", "--ignore-not-found", "-o", "name"
    ).stdout.strip()
    if have:
        return
    password = secrets.token_hex(24)
    host = f"cqrs-postgres.{NAMESPACE}.svc.cluster.local:5432"
    for name, key, value in (
        ("cqrs-postgres", "password", password),
        ("cqrs-orders-app", "uri", f"postgresql://cqrs:{password}@{host}/orders"),
        ("cqrs-stats-app", "uri", f"postgresql://cqrs:{password}@{host}/stats"),
    ):
        # the value through standard input, never on a command line
        manifest = node.kubectl(
            "-n", NAMESPACE, "create", "secret", "generic", name,
            f"--from-file={key}=/dev/stdin", "--dry-run=client", "-o", "json",
            input=value,
        ).stdout  # fmt: skip
        node.kubectl("apply", "-f", "-", input=manifest)


def deploy(
    node: Node, image_tag: str, *, overlay: str = "direct", database: str = "single"
) -> None:
    """`make deploy`, unchanged, against the node."""
    env = {**os.environ, "KUBECONFIG": str(node.kubeconfig)}
    argv = [
        "make", "--no-print-directory", "-C", str(REPO), "deploy",
        f"REGISTRY={REGISTRY}", f"TAG={image_tag}", f"OVERLAY={overlay}", f"DATABASE={database}",
    ]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        raise RuntimeError(
            f"make deploy exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )

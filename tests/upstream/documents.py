"""Every document the shop asks a cluster to take, rendered the way the tools render them.

`make deploy` (each overlay x each database), `kubectl apply -k tekton`, the PipelineRun that
`make pipeline` renders and the deploy step's digest-pinned overlay, the example run, the
optional custom domain, and the Istio install profile istioctl reads. The upstream validators
and the real API server read these sets.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cqrs_common.roles import ROLES

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ("direct", "eventing")
DATABASES = ("cnpg", "single", "none")
REGISTRY, TAG = "docker.io/someone", "t1"
DIGEST = "sha256:" + "ab" * 32


@dataclass(frozen=True)
class DocumentSet:
    """One command's output: a name for test ids and the YAML stream it applies."""

    name: str
    text: str

    def documents(self) -> list[dict[str, Any]]:
        return [d for d in yaml.safe_load_all(self.text) if d]


def run(args: list[str], **env: str) -> str:
    result = subprocess.run(
        args, cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, **env},
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def kustomize(path: str) -> str:
    return run(["kubectl", "kustomize", path])


def deploy_dry_run(overlay: str, database: str) -> str:
    """What `make deploy OVERLAY=.. DATABASE=..` applies, in its order."""
    return run(
        ["bash", "knative/scripts/deploy.sh", "--dry-run", "--overlay", overlay,
         "--database", database],
        REGISTRY=REGISTRY, TAG=TAG, ROLES=" ".join(r.name for r in ROLES),
    )  # fmt: skip


def pipeline_run() -> str:
    """The PipelineRun `make pipeline` creates."""
    return run(
        [sys.executable, "tekton/scripts/pipelinerun.py", "--dry-run",
         "--repo-url", "https://github.com/someone/cqrs-knative.git", "--revision", "0" * 40,
         "--docker-user", "someone", "--tag", "t1", "--overlay", "direct"],
    )  # fmt: skip


def pipeline_deploy(overlay: str) -> str:
    """What the pipeline's deploy step applies: the overlay pinned to pushed digests."""
    urls = [f"{REGISTRY}/{r.service}:{TAG}" for r in ROLES]
    return run(
        ["bash", "tekton/scripts/deploy.sh", "--dry-run", "--overlay", overlay, *urls, "--",
         *[DIGEST] * len(urls)],
    )  # fmt: skip


def deploy_sets() -> list[DocumentSet]:
    return [
        DocumentSet(f"deploy-{o}-{d}", deploy_dry_run(o, d)) for o in OVERLAYS for d in DATABASES
    ]


def all_sets() -> list[DocumentSet]:
    """Every set above; the Tekton ones validated together (runs refer to the Pipeline)."""
    tekton = kustomize("tekton")
    return [
        *deploy_sets(),
        DocumentSet("custom-domain", kustomize("istio/domain")),
        DocumentSet("tekton+make-pipeline", tekton + "---\n" + pipeline_run()),
        DocumentSet(
            "tekton+example-run",
            tekton + "---\n" + (ROOT / "tekton" / "pipelinerun.yaml").read_text(),
        ),
        *[DocumentSet(f"pipeline-deploy-{o}", pipeline_deploy(o)) for o in OVERLAYS],
        # read by `istioctl install -f`, never applied
        DocumentSet(
            "istioctl-profile",
            (ROOT / "istio" / "istio-operator-knative-minimal.yaml").read_text(encoding="utf-8"),
        ),
    ]

"""Start the Tekton pipeline: render tekton/pipelinerun.yaml with its params and create it.

`make pipeline` runs this. With --dry-run (PIPELINE_DRY_RUN=1) it only prints the
PipelineRun; otherwise it checks the repository URL (the cluster clones it, so a path on this
machine is refused), kubectl, its context, Tekton and the installed Pipeline, and says exactly
what is missing before it creates anything.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "tekton" / "pipelinerun.yaml"
PLACEHOLDER_USER = "change-me"


class Missing(Exception):
    """Something the run needs is not there; the message says what and how to fix it."""


def render(params: dict[str, str], template: Path = TEMPLATE) -> dict[str, Any]:
    """The PipelineRun from the template with the given param values set (by name)."""
    run = yaml.safe_load(template.read_text(encoding="utf-8"))
    declared = {p["name"]: p for p in run["spec"]["params"]}
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ValueError(f"{template.name} has no param(s) {', '.join(unknown)}")
    for name, value in params.items():
        declared[name]["value"] = value
    return run


def https_url(url: str) -> str:
    """git@host:owner/repo.git -> https://host/owner/repo.git: the clone has no SSH key."""
    if "://" not in url and ":" in url and "@" in url.split(":", 1)[0]:
        host, _, path = url.partition(":")
        return f"https://{host.rpartition('@')[2]}/{path}"
    return url


def local_repository(url: str) -> bool:
    """A path or file:// URL: only this machine can read it, never the cluster's git-clone."""
    if url.startswith("file:"):
        return True
    if "://" in url:
        return False
    scp_like = ":" in url and "@" in url.split(":", 1)[0]  # git@host:owner/repo.git
    return not scp_like


def unclonable(url: str) -> str:
    return (
        f"the cluster cannot clone {url}: it is a path on this machine; push the revision to a "
        "remote the cluster reaches and set REPO_URL=https://<host>/<owner>/<repo>.git"
    )


def _check_params(params: dict[str, str]) -> None:
    empty = [name for name, value in params.items() if not value]
    if empty:
        hints = {
            "repo-url": "REPO_URL=https://github.com/<owner>/<repo>.git (no git remote 'origin')",
            "revision": "REVISION=<branch or commit>",
            "docker-user": "DOCKER_USER=<Docker Hub user or organisation>",
            "tag": "TAG=<image tag>",
            "overlay": "OVERLAY=direct or OVERLAY=eventing",
        }
        raise Missing("missing: " + "; ".join(hints.get(n, n) for n in empty))
    if params.get("docker-user") == PLACEHOLDER_USER:
        raise Missing("missing: DOCKER_USER=<Docker Hub user or organisation>")


def _kubectl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", *args], capture_output=True, text=True, check=False)


def check_cluster(namespace: str, pipeline: str) -> None:
    """Raise Missing with the first thing `kubectl create` would trip over."""
    if shutil.which("kubectl") is None:
        raise Missing(
            "kubectl is not on PATH: install it (https://kubernetes.io/docs/tasks/tools/)"
        )
    if _kubectl("config", "current-context").returncode != 0:
        raise Missing(
            "kubectl has no current context: point KUBECONFIG at a cluster with Tekton "
            "(docs/tekton.md), or run PIPELINE_DRY_RUN=1 make pipeline to print the PipelineRun"
        )
    if _kubectl("get", "crd", "pipelineruns.tekton.dev").returncode != 0:
        raise Missing(
            "the cluster has no Tekton Pipelines (CRD pipelineruns.tekton.dev): "
            "install it as docs/tekton.md shows"
        )
    if _kubectl("get", "pipeline", pipeline, "--namespace", namespace).returncode != 0:
        raise Missing(
            f"no Pipeline {pipeline} in namespace {namespace}: run kubectl apply -k tekton"
        )
    if _kubectl("get", "secret", "docker-hub-credentials", "--namespace", namespace).returncode:
        raise Missing(
            f"no Secret docker-hub-credentials in namespace {namespace}: "
            "create it as docs/tekton.md shows"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo-url", default="")
    parser.add_argument("--revision", default="")
    parser.add_argument("--docker-user", default="")
    parser.add_argument("--tag", default="")
    parser.add_argument("--overlay", default="direct")
    parser.add_argument("--dry-run", action="store_true", help="print the PipelineRun only")
    args = parser.parse_args(argv)
    params = {
        "repo-url": https_url(args.repo_url),
        "revision": args.revision,
        "docker-user": args.docker_user,
        "tag": args.tag,
        "overlay": args.overlay,
    }
    try:
        _check_params(params)
        run = render(params)
        text = yaml.safe_dump(run, sort_keys=False)
        local = local_repository(params["repo-url"])
        if args.dry_run:
            if local:
                print(f"make pipeline: warning: {unclonable(params['repo-url'])}", file=sys.stderr)
            sys.stdout.write(text)
            return 0
        if local:
            raise Missing(unclonable(params["repo-url"]))
        check_cluster(run["metadata"]["namespace"], run["spec"]["pipelineRef"]["name"])
    except Missing as exc:
        print(f"make pipeline: {exc}", file=sys.stderr)
        return 2
    created = subprocess.run(
        ["kubectl", "create", "-f", "-", "-o", "name"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    if created.returncode != 0:
        sys.stderr.write(created.stderr)
        return created.returncode
    name = created.stdout.strip().rpartition("/")[2]
    namespace = run["metadata"]["namespace"]
    print(f"created PipelineRun {name} (revision {args.revision}); follow it with")
    print(f"  tkn pipelinerun logs -f {name} -n {namespace}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

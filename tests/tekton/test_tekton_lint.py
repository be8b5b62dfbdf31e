"""@ibm/tekton-lint over the Tekton manifests, installed with npm into var/ (git-ignored).

tekton-lint 1.1 predates two stable Tekton features the pipeline uses: `matrix` and
remote Tasks through a resolver. It reports a matrixed param as missing, `[*]` on a
matrixed task's results as an unknown result, and a resolver taskRef as a Task named
'undefined'. So it lints a *lint view* of the manifests, identical except that the matrix
becomes its first combination, `[*]` is dropped, and the resolver reference becomes a
local stub with the remote Task's interface (GIT_CLONE). test_tekton_manifests.py checks
exactly those three things itself. Every rule stays on; warnings count as problems too.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from validate import kustomize_build

from tests.tekton.conftest import ROOT, TEKTON, load_yaml
from tests.tekton.test_tekton_manifests import GIT_CLONE

VERSION = "1.1.0"
PREFIX = ROOT / "var" / "tekton-lint"
BIN = PREFIX / "node_modules" / ".bin" / "tekton-lint"


@pytest.fixture(scope="module")
def tekton_lint() -> Path:
    """The linter, installed on first use (npm is the only network access needed)."""
    installed = PREFIX / "node_modules" / "@ibm" / "tekton-lint" / "package.json"
    if installed.is_file() and json.loads(installed.read_text())["version"] == VERSION:
        return BIN
    npm = shutil.which("npm")
    assert npm, "npm is needed to install @ibm/tekton-lint (Debian: apt-get install npm)"
    PREFIX.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(PREFIX),
         f"@ibm/tekton-lint@{VERSION}"],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, f"npm install failed:\n{result.stderr}"
    return BIN


def git_clone_stub() -> dict[str, Any]:
    """A local Task with the remote git-clone Task's interface."""
    return {
        "apiVersion": "tekton.dev/v1",
        "kind": "Task",
        "metadata": {"name": "git-clone"},
        "spec": {
            "params": [
                {"name": n, "type": "string", **({} if required else {"default": ""})}
                for n, required in GIT_CLONE["params"].items()
            ],
            "workspaces": [
                {"name": n, "optional": optional} for n, optional in GIT_CLONE["workspaces"].items()
            ],
            "results": [{"name": r} for r in sorted(GIT_CLONE["results"])],
            "steps": [
                {
                    "name": "clone",
                    "image": "ghcr.io/tektoncd-catalog/git-clone:v1.0.2",
                    "env": [
                        {"name": n.upper(), "value": f"$(params.{n})"} for n in GIT_CLONE["params"]
                    ]
                    + [{"name": "OUT", "value": f"$(workspaces.{n}.path)"} for n in ["output"]],
                    "script": "#!/bin/sh\n"
                    + "".join(f"touch $(results.{r}.path)\n" for r in sorted(GIT_CLONE["results"])),
                }
            ],
        },
    }


def lint_view(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    view = []
    for doc in copy.deepcopy(docs):
        if doc["kind"] == "Pipeline":
            for task in doc["spec"]["tasks"]:
                if "resolver" in task.get("taskRef", {}):
                    task["taskRef"] = {"name": "git-clone"}
                for param in task.pop("matrix", {}).get("params", []):
                    task.setdefault("params", []).append(
                        {"name": param["name"], "value": param["value"][0]}
                    )
            text = re.sub(r"(\$\(tasks\.[^)]*\.results\.[^)]*)\[\*\]\)", r"\1)", yaml.dump(doc))
            doc = yaml.safe_load(text)
        view.append(doc)
    return [*view, git_clone_stub()]


def run_lint(binary: Path, docs: list[dict[str, Any]], where: Path) -> list[dict[str, Any]]:
    where.mkdir()
    for i, doc in enumerate(docs):
        (where / f"{i:02d}-{doc['kind'].lower()}.yaml").write_text(yaml.safe_dump(doc))
    result = subprocess.run(
        [str(binary), "--format", "json", "--config", str(where), f"{where}/*.yaml"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.stdout.strip().startswith("["), result.stdout + result.stderr
    return json.loads(result.stdout)


def all_docs() -> list[dict[str, Any]]:
    return kustomize_build(TEKTON) + load_yaml(TEKTON / "pipelinerun.yaml")


def test_tekton_lint_is_clean(tekton_lint: Path, tmp_path: Path) -> None:
    problems = run_lint(tekton_lint, lint_view(all_docs()), tmp_path / "view")
    assert [f"{p['rule']}: {p['message']}" for p in problems] == []


def test_tekton_lint_catches_mistakes(tekton_lint: Path, tmp_path: Path) -> None:
    """The linter really runs over our files: break two references and it says so."""
    docs = all_docs()
    pipeline = next(d for d in docs if d["kind"] == "Pipeline")
    pipeline["spec"]["tasks"][1]["runAfter"] = ["no-such-task"]
    task = next(d for d in docs if d["kind"] == "Task" and d["metadata"]["name"] == "cqrs-deploy")
    task["spec"]["steps"][0]["args"][1] = "$(params.overlays)"
    rules = {p["rule"] for p in run_lint(tekton_lint, lint_view(docs), tmp_path / "view")}
    assert {"no-pipeline-missing-task", "no-undefined-param"} <= rules

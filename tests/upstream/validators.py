"""The upstream admission checks, as programs: tools/upstream/validate-<project>.

Each is a small Go module that imports one upstream project's API packages at the version the
docs install and runs what its admission webhook runs (strict decoding, SetDefaults, Validate)
on every document of its API groups; documents of other groups it skips. They all print one
JSON object a document: {"file", "index", "kind", "name", "result": ok|error|skip, "errors"}.
"""

from __future__ import annotations

import functools
import json
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from devtools import gobuild

TOOLS = Path(__file__).resolve().parents[2] / "tools" / "upstream"
PROJECTS = ("knative", "tekton", "istio", "cnpg")


@dataclass
class Verdict:
    """What one validator said of one document."""

    project: str
    index: int
    kind: str
    name: str
    result: str
    errors: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.project}: #{self.index} {self.kind}/{self.name}: " + "; ".join(self.errors)


@functools.cache
def binary(project: str) -> Path:
    module = TOOLS / f"validate-{project}"
    return gobuild.build(module, ".", f"validate-{project}")


def run(project: str, text: str, config: str = "") -> list[Verdict]:
    """Run validate-<project> on a YAML stream (and ConfigMaps as the cluster's config)."""
    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "docs.yaml"
        docs.write_text(text, encoding="utf-8")
        args = [str(binary(project))]
        if config:
            (Path(tmp) / "config.yaml").write_text(config, encoding="utf-8")
            args += ["--config", str(Path(tmp) / "config.yaml")]
        result = subprocess.run(
            [*args, str(docs)], capture_output=True, text=True, timeout=300, check=False
        )
    if result.returncode not in (0, 1):
        raise RuntimeError(f"validate-{project} could not read its input:\n{result.stderr}")
    verdicts = [
        Verdict(
            project=project,
            index=v["index"],
            kind=v.get("kind", ""),
            name=v.get("name", ""),
            result=v["result"],
            errors=v.get("errors") or [],
        )
        for v in map(json.loads, result.stdout.splitlines())
    ]
    # The exit status and the verdicts must agree, or one of them is lying.
    assert (result.returncode == 1) == any(v.result == "error" for v in verdicts), result.stderr
    return verdicts


def subcommand(project: str, name: str, config: str, *args: str) -> str:
    """Run `validate-<project> NAME --config FILE ARGS...`; its standard output."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(config, encoding="utf-8")
        result = subprocess.run(
            [str(binary(project)), name, "--config", str(path), *args],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"validate-{project} {name} failed:\n{result.stderr}")
    return result.stdout


def validate(text: str, config: dict[str, str] | None = None) -> list[Verdict]:
    """Every validator over the stream: all verdicts that are not skips."""
    config = config or {}
    return [v for p in PROJECTS for v in run(p, text, config.get(p, "")) if v.result != "skip"]

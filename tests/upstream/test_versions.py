"""The docs install the versions the tests check against, and those are current.

The versions live once, in the go.mod files of tools/upstream/validate-*: the validators are
built from them and the API server's CRDs are read from them. Every versioned install command
in the docs must name the same release.
"""

from __future__ import annotations

import re

import pytest

from tests.upstream.validators import TOOLS

ROOT = TOOLS.parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def pinned(tool: str, module: str) -> str:
    """The version of `module` that tools/upstream/<tool>/go.mod requires."""
    text = (TOOLS / tool / "go.mod").read_text(encoding="utf-8")
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)} (v\S+)", text, re.M)
    assert match, f"{tool}/go.mod does not require {module}"
    return match.group(1)


def knative_release(module_version: str) -> str:
    """knative.dev modules are tagged v0.(minor + 27).patch for release knative-v1.minor.patch."""
    major, minor, patch = module_version.lstrip("v").split(".")
    assert major == "0", module_version
    return f"1.{int(minor) - 27}.{patch}"


def mentions(pattern: str) -> dict[str, set[str]]:
    """Every version the docs name in install commands matching `pattern` (one group)."""
    found: dict[str, set[str]] = {}
    for path in DOCS:
        for version in re.findall(pattern, path.read_text(encoding="utf-8")):
            found.setdefault(version, set()).add(path.name)
    return found


def test_knative_serving_and_eventing_are_one_release() -> None:
    serving = pinned("validate-knative", "knative.dev/serving")
    eventing = pinned("validate-knative", "knative.dev/eventing")
    assert knative_release(serving) == knative_release(eventing)


@pytest.mark.parametrize(
    ("pattern", "tool", "module", "to_release"),
    [
        (r"releases/download/knative-v([\d.]+)/", "validate-knative", "knative.dev/serving",
         knative_release),
        (r"tekton-releases/pipeline/previous/v([\d.]+)/", "validate-tekton",
         "github.com/tektoncd/pipeline", lambda v: v.lstrip("v")),
        (r"tekton-releases/triggers/previous/v([\d.]+)/", "validate-tekton",
         "github.com/tektoncd/triggers", lambda v: v.lstrip("v")),
        (r"releases/cnpg-([\d.]+)\.yaml", "validate-cnpg",
         "github.com/cloudnative-pg/cloudnative-pg", lambda v: v.lstrip("v")),
    ],
    ids=["knative", "tekton-pipeline", "tekton-triggers", "cloudnative-pg"],
)  # fmt: skip
def test_install_commands_name_the_pinned_release(
    pattern: str, tool: str, module: str, to_release
) -> None:
    release = to_release(pinned(tool, module))
    found = mentions(pattern)
    assert found, f"the docs install no {module}"
    assert set(found) == {release}, found


def test_cloudnative_pg_branch_matches_its_release() -> None:
    release = pinned("validate-cnpg", "github.com/cloudnative-pg/cloudnative-pg").lstrip("v")
    branches = mentions(r"cloudnative-pg/(release-[\d.]+)/releases")
    assert set(branches) == {"release-" + release.rpartition(".")[0]}


def test_the_version_table_names_the_pinned_minors() -> None:
    table = (ROOT / "docs" / "cluster.md").read_text(encoding="utf-8")
    knative = knative_release(pinned("validate-knative", "knative.dev/serving"))
    assert f"| Knative Eventing | v{knative.rpartition('.')[0]} (`knative-v{knative}`)" in table
    cnpg = pinned("validate-cnpg", "github.com/cloudnative-pg/cloudnative-pg").lstrip("v")
    assert f"| CloudNativePG | {cnpg.rpartition('.')[0]}" in table

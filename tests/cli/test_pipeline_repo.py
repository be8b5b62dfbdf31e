"""`make pipeline` with a repository the cluster cannot clone: a path or file:// URL here."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.support import fake_tool, make, own_lines, python
from tests.conftest import REPO

PIPELINERUN = str(REPO / "tekton" / "scripts" / "pipelinerun.py")
PARAMS = ["--revision", "abc123", "--docker-user", "alice", "--tag", "t1"]


@pytest.mark.parametrize(
    "repo_url", [str(REPO), "file:///srv/git/shop.git", "./shop", "../shop.git", "~/shop"]
)
def test_a_local_repository_is_refused_before_anything_is_created(
    tmp_path: Path, repo_url: str
) -> None:
    created = tmp_path / "created"
    fake_tool(tmp_path / "bin", "kubectl", f'[ "$1" = create ] && touch {created}\nexit 0\n')
    result = python(
        PIPELINERUN, "--repo-url", repo_url, *PARAMS,
        env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert not created.exists()
    [line] = result.stderr.strip().splitlines()
    assert "the cluster cannot clone" in line and "REPO_URL=https://" in line, line


def test_a_dry_run_with_a_local_repository_warns_and_still_prints() -> None:
    result = python(PIPELINERUN, "--repo-url", "file:///srv/git/shop.git", *PARAMS, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "kind: PipelineRun" in result.stdout
    assert "warning: the cluster cannot clone file:///srv/git/shop.git" in result.stderr


@pytest.mark.parametrize(
    "repo_url",
    ["https://github.com/alice/shop.git", "git@github.com:alice/shop.git",
     "ssh://git@example.com/alice/shop.git", "http://gitea.local/alice/shop.git"],
)  # fmt: skip
def test_remote_repositories_pass(repo_url: str) -> None:
    result = python(PIPELINERUN, "--repo-url", repo_url, *PARAMS, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "cannot clone" not in result.stderr


def test_make_pipeline_with_a_local_repo_url_is_refused(tmp_path: Path) -> None:
    fake_tool(tmp_path / "bin", "kubectl", "exit 0\n")
    result = make(
        "pipeline", "DOCKER_USER=alice", f"REPO_URL={REPO}",
        env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode != 0
    assert [line for line in own_lines(result.stderr) if "cannot clone" in line], result.stderr

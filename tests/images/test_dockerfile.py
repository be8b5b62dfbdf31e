"""functions/Dockerfile, its lock file and the image scripts, checked without building."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from cqrs_common.roles import ROLES

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ROOT / "functions"
DOCKERFILE = FUNCTIONS / "Dockerfile"
HADOLINT = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "hadolint"


def test_hadolint_is_clean() -> None:
    hadolint = HADOLINT if HADOLINT.exists() else ROOT / ".venv" / "bin" / "hadolint"
    result = subprocess.run(
        [str(hadolint), str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_recipe() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M).group(1)
    # an exact patch version (or a digest), never a moving tag
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base
    assert "--require-hashes" in text and "requirements.txt" in text
    assert "requirements-dev" not in text and "pytest" not in text
    assert re.search(r"^USER \d+:\d+$", text, re.M), "numeric non-root user"
    for env in ("PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1"):
        assert env in text
    assert re.search(r'^CMD \["/app/serve.sh"\]$', text, re.M)
    serve = (FUNCTIONS / "serve.sh").read_text(encoding="utf-8")
    assert re.search(r"^exec gunicorn -c python:cqrs_common.gunicorn_conf ", serve, re.M)
    assert os.access(FUNCTIONS / "serve.sh", os.X_OK)


def test_dockerignore_lets_in_every_role_and_nothing_else() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (FUNCTIONS / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.startswith("!")
    }
    packages = {f"{r.name}/{r.package}" for r in ROLES}
    assert allowed == packages | {"shared/cqrs_common", "requirements.txt", "serve.sh"}


def test_requirements_lock_is_hashed_and_covers_requirements_in() -> None:
    lock = (FUNCTIONS / "requirements.txt").read_text(encoding="utf-8")
    pins = dict(re.findall(r"^([a-z0-9][a-z0-9._-]*)==(\S+) \\$", lock, re.M))
    blocks = re.split(r"\n(?=[a-z0-9])", lock.split("\n\n", 1)[-1].strip())
    for block in blocks:
        if block.startswith("#"):
            continue
        assert "--hash=sha256:" in block, f"unhashed: {block.splitlines()[0]}"
    wanted = [
        re.match(r"[A-Za-z0-9._-]+", line).group(0).lower()
        for line in (FUNCTIONS / "requirements.in").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert wanted and all(name in pins for name in wanted), (wanted, sorted(pins))
    assert "psycopg-binary" in pins, "psycopg[binary] needs its binary wheel in the lock"
    assert not re.search(r"^--(extra-)?index-url|^--find-links|file://", lock, re.M)


def fake_engine(tmp_path: Path, name: str) -> Path:
    """A stand-in engine that logs its arguments, one call per line."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    tool = bindir / name
    tool.write_text(f'#!/bin/sh\necho "{name} $*" >> "{tmp_path}/calls"\n')
    tool.chmod(0o755)
    return bindir


ALL_ROLES = " ".join(r.name for r in ROLES)


def test_make_passes_the_roles_of_cqrs_common_roles_to_the_scripts() -> None:
    shown = subprocess.run(
        ["make", "-n", "images", "deploy", "TAG=t1", "REGISTRY=r"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert shown.count(f'ROLES="{ALL_ROLES}"') == 2, shown


@pytest.mark.parametrize("engine", ["docker", "buildah"])
def test_make_images_builds_all_six_and_push_needs_a_registry(tmp_path: Path, engine: str) -> None:
    bindir = fake_engine(tmp_path, engine)
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "ENGINE": engine, "TAG": "t1", "ROLES": ALL_ROLES}
    script = str(ROOT / "knative" / "scripts" / "images.sh")
    subprocess.run([script, "build"], env=env, check=True, capture_output=True)
    calls = (tmp_path / "calls").read_text().splitlines()
    assert len(calls) == len(ROLES)
    for role, call in zip(ROLES, calls, strict=True):
        assert f"--build-arg ROLE={role.name} -t {role.service}:t1" in call
        assert call.endswith(str(FUNCTIONS)) and f"-f {DOCKERFILE}" in call
    refused = subprocess.run([script, "push"], env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and "REGISTRY" in refused.stderr
    env["REGISTRY"] = "docker.io/someone"
    subprocess.run([script, "push"], env=env, check=True, capture_output=True)
    pushes = (tmp_path / "calls").read_text().splitlines()[len(ROLES) :]
    assert [p.split()[2] if engine == "buildah" else p.split()[-1] for p in pushes] == [
        f"docker.io/someone/{r.service}:t1" for r in ROLES
    ]


def test_images_refuse_latest(tmp_path: Path) -> None:
    bindir = fake_engine(tmp_path, "docker")
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "ENGINE": "docker", "TAG": "latest",
           "ROLES": ALL_ROLES}  # fmt: skip
    result = subprocess.run(
        [str(ROOT / "knative" / "scripts" / "images.sh"), "build"], env=env, capture_output=True
    )
    assert result.returncode == 2


@pytest.mark.parametrize(("overlay", "database"), [("direct", "cnpg"), ("eventing", "single")])
def test_deploy_dry_run_renders_everything_in_order(overlay: str, database: str) -> None:
    roles = " ".join(r.name for r in ROLES)
    env = {**os.environ, "REGISTRY": "docker.io/someone", "TAG": "t1", "ROLES": roles}
    script = str(ROOT / "knative" / "scripts" / "deploy.sh")
    out = subprocess.run(
        [script, "--dry-run", "--overlay", overlay, "--database", database],
        env=env, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    docs = [d for d in yaml.safe_load_all(out) if d]
    kinds = [d["kind"] for d in docs]
    assert kinds[0] == "Namespace"
    first_ksvc = next(i for i, d in enumerate(docs) if d["apiVersion"] == "serving.knative.dev/v1")
    assert kinds.index("StatefulSet" if database == "single" else "Cluster") < first_ksvc
    images = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["image"]
        for d in docs
        if d["kind"] == "Service" and d["apiVersion"] == "serving.knative.dev/v1"
    }
    assert images == {r.service: f"docker.io/someone/{r.service}:t1" for r in ROLES}
    assert "AuthorizationPolicy" in kinds
    assert ("Trigger" in kinds) == (overlay == "eventing")
    eventing_ns = [d for d in docs if d["metadata"].get("namespace") == "knative-eventing"]
    assert bool(eventing_ns) == (overlay == "eventing")


def test_make_targets_call_the_scripts(tmp_path: Path) -> None:
    bindir = fake_engine(tmp_path, "docker")
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "ENGINE": "docker"}
    make = ["make", "-s", "-C", str(ROOT), "TAG=t2", "REGISTRY=docker.io/someone"]
    subprocess.run([*make, "push"], env=env, check=True, capture_output=True)
    calls = (tmp_path / "calls").read_text().splitlines()
    assert len(calls) == 2 * len(ROLES)
    assert calls[-1] == f"docker push docker.io/someone/{ROLES[-1].service}:t2"
    out = subprocess.run(
        [*make, "deploy", "OVERLAY=eventing", "DEPLOY_FLAGS=--dry-run"],
        env=env, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    kinds = {d["kind"] for d in yaml.safe_load_all(out) if isinstance(d, dict)}
    assert {"Namespace", "Cluster", "Service", "Trigger", "AuthorizationPolicy"} <= kinds
    refused = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "deploy", "REGISTRY="], env=env, capture_output=True
    )
    assert refused.returncode != 0


def test_make_deploy_dry_run_prints_only_yaml() -> None:
    """`make deploy DEPLOY_FLAGS=--dry-run | kubectl apply -f -` works: no echo of the recipe."""
    out = subprocess.run(
        ["make", "-C", str(ROOT), "--no-print-directory", "deploy", "REGISTRY=docker.io/someone",
         "TAG=t1", "DEPLOY_FLAGS=--dry-run"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert out.startswith("---\n"), out[:200]
    assert all(isinstance(d, dict) for d in yaml.safe_load_all(out) if d is not None)

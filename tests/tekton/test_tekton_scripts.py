"""The scripts the pipeline's steps run, and `make pipeline`, exercised on this machine.

Cluster-side tools (buildah, a kubectl with a context, make inside the step) are stood
in for by small fakes on PATH that log how they were called; `kubectl kustomize` is real.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from validate import validate_document

from cqrs_common.roles import ROLES
from tests.tekton.conftest import OVERLAYS, ROOT, SCRIPTS, SHOP_NAMESPACE

USER = "alice"
TAG = "0123456789ab"
DIGESTS = {role.name: f"sha256:{i:x}" + "0" * 63 for i, role in enumerate(ROLES, start=1)}
URLS = {role.name: f"docker.io/{USER}/{role.service}:{TAG}" for role in ROLES}


def fake(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def run(
    args: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def deploy(*extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    roles = [r.name for r in ROLES]
    urls = [URLS[r] for r in roles]
    digests = [DIGESTS[r] for r in roles]
    return run(["bash", str(SCRIPTS / "deploy.sh"), *extra, *urls, "--", *digests], env=env)


# --- deploy.sh -----------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deploy_dry_run_pins_every_service_to_its_digest(overlay: str) -> None:
    result = deploy("--dry-run", "--overlay", overlay)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    services = {
        d["metadata"]["name"]: d
        for d in docs
        if d["apiVersion"].startswith("serving.knative.dev/") and d["kind"] == "Service"
    }
    assert set(services) == {role.service for role in ROLES}
    for role in ROLES:
        (container,) = services[role.service]["spec"]["template"]["spec"]["containers"]
        assert container["image"] == f"docker.io/{USER}/{role.service}@{DIGESTS[role.name]}"
    assert [e for d in docs for e in validate_document(d)] == []
    assert all(d["metadata"].get("namespace") == SHOP_NAMESPACE for d in docs)
    assert not list((ROOT / "var" / "deploy").glob(f"{overlay}.*")), "work dir left behind"


def test_deploy_refuses_bad_input() -> None:
    script = str(SCRIPTS / "deploy.sh")
    url, digest = URLS["dispatcher"], DIGESTS["dispatcher"]
    cases = [
        ([url, url, "--", digest], "need one digest per image"),
        ([url, "--", "sha256:abc"], "not an image digest"),
        (["docker.io/alice/other:1", "--", digest], "not a cqrs-<role> image"),
        (["--overlay", "nope", url, "--", digest], "no overlay knative/overlays/nope"),
    ]
    for args, message in cases:
        result = run(["bash", script, "--dry-run", *args])
        assert result.returncode == 2, args
        assert message in result.stderr


def test_deploy_refuses_an_image_the_overlay_does_not_have() -> None:
    result = run(
        ["bash", str(SCRIPTS / "deploy.sh"), "--dry-run", "docker.io/alice/cqrs-nothing:1",
         "--", DIGESTS["dispatcher"]]
    )  # fmt: skip
    assert result.returncode == 1
    assert "has no image named cqrs-nothing (or docker.io/alice/cqrs-nothing)" in result.stderr
    # a role the build did not push stays unpinned: refuse rather than deploy a mix
    result = run(
        ["bash", str(SCRIPTS / "deploy.sh"), "--dry-run", URLS["dispatcher"],
         "--", DIGESTS["dispatcher"]]
    )  # fmt: skip
    assert result.returncode == 1
    assert "not pinned to a pushed digest" in result.stderr and "cqrs-order-db" in result.stderr


def fake_kubectl(tmp_path: Path, fail: str = "") -> tuple[Path, Path]:
    """A kubectl that logs its calls, renders for real, and exits 1 on the verb `fail`."""
    real = shutil.which("kubectl")
    assert real, "kubectl is needed for `kubectl kustomize`"
    log, applied = tmp_path / "kubectl.log", tmp_path / "applied.yaml"
    fake(
        tmp_path / "bin",
        "kubectl",
        f"""echo "$*" >>{log}
[[ "$1" == "{fail}" ]] && {{ echo "error: {fail} refused" >&2; exit 1; }}
case "$1" in
  kustomize) exec {real} "$@" ;;
  apply) cat "${{@: -1}}" >{applied} ;;
esac
""",
    )
    return log, applied


def test_deploy_applies_then_waits_for_the_knative_services(tmp_path: Path) -> None:
    log, applied = fake_kubectl(tmp_path)
    result = deploy(env={"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert calls[0].startswith("kustomize ")
    assert calls[1].startswith(f"apply --namespace {SHOP_NAMESPACE} -f ")
    assert calls[2:] == [
        f"wait --namespace {SHOP_NAMESPACE} --for=condition=Ready --timeout=10m ksvc --all"
    ]
    text = applied.read_text()
    assert all(f"@{digest}" in text for digest in DIGESTS.values())


@pytest.mark.parametrize("verb", ["apply", "wait"])
def test_deploy_fails_when_any_kubectl_fails(tmp_path: Path, verb: str) -> None:
    log, _ = fake_kubectl(tmp_path, fail=verb)
    result = deploy(env={"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"})
    assert result.returncode != 0
    assert f"error: {verb} refused" in result.stderr
    assert log.read_text().splitlines()[-1].startswith(verb)


# --- build-image.sh --------------------------------------------------------------------


def build(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    results = tmp_path / "results"
    results.mkdir(exist_ok=True)
    config = tmp_path / "dockerconfig"
    config.mkdir(exist_ok=True)
    base = {
        "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
        "ROLE": "order-db",
        "IMAGE": URLS["order-db"],
        "DOCKER_USER": USER,
        "CONTEXT_DIR": str(ROOT / "functions"),
        "DOCKER_CONFIG_DIR": str(config),
        "RESULT_IMAGE_DIGEST": str(results / "IMAGE_DIGEST"),
        "RESULT_IMAGE_URL": str(results / "IMAGE_URL"),
    }
    return run(["bash", str(SCRIPTS / "build-image.sh")], env={**base, **env})


def fake_buildah(tmp_path: Path, digest: str) -> Path:
    log = tmp_path / "buildah.log"
    fake(
        tmp_path / "bin",
        "buildah",
        f"""echo "$*" >>{log}
while (($#)); do
  if [[ "$1" == --digestfile ]]; then printf '%s' '{digest}' >"$2"; fi
  shift
done
""",
    )
    return log


def test_build_pushes_and_writes_results(tmp_path: Path) -> None:
    log = fake_buildah(tmp_path, DIGESTS["order-db"])
    (tmp_path / "dockerconfig").mkdir()
    (tmp_path / "dockerconfig" / "config.json").write_text('{"auths": {}}')
    result = build(tmp_path)
    assert result.returncode == 0, result.stderr
    bud, push = log.read_text().splitlines()
    functions = ROOT / "functions"
    assert bud == (
        f"--storage-driver=overlay bud --format=oci --build-arg ROLE=order-db "
        f"-f {functions}/Dockerfile -t {URLS['order-db']} {functions}"
    )
    assert push.startswith(
        f"--storage-driver=overlay push --authfile {tmp_path}/dockerconfig/config.json "
    )
    assert push.endswith(f"{URLS['order-db']} docker://{URLS['order-db']}")
    assert (tmp_path / "results" / "IMAGE_DIGEST").read_text() == DIGESTS["order-db"]
    assert (tmp_path / "results" / "IMAGE_URL").read_text() == URLS["order-db"]


def test_build_refuses_what_would_fail_late(tmp_path: Path) -> None:
    fake_buildah(tmp_path, "not-a-digest")
    result = build(tmp_path, DOCKER_USER="change-me")
    assert result.returncode == 2 and "set it to your Docker Hub user" in result.stderr
    result = build(tmp_path)
    assert result.returncode == 2 and "no config.json in the dockerconfig" in result.stderr
    (tmp_path / "dockerconfig" / ".dockerconfigjson").write_text('{"auths": {}}')
    result = build(tmp_path)
    assert result.returncode == 1 and "no usable digest" in result.stderr
    assert not (tmp_path / "results" / "IMAGE_DIGEST").exists()


# --- run-tests.sh ----------------------------------------------------------------------


def fake_python(tmp_path: Path, log: Path) -> dict[str, str]:
    """A HOME whose venv python logs its calls: run-tests.sh then installs nothing."""
    home = tmp_path / "home"
    fake(home / "venv" / "bin", "python", f'echo "$PWD $*" >>{log}\n')
    return {"HOME": str(home)}


def test_run_tests_waits_for_postgres_then_runs_the_pipeline_tests(tmp_path: Path) -> None:
    log = tmp_path / "python.log"
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        result = run(
            ["bash", str(SCRIPTS / "run-tests.sh")],
            env={
                **fake_python(tmp_path, log),
                "TEST_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/postgres",
                "DB_WAIT_SECONDS": "5",
            },
            cwd=tmp_path,
        )
    assert result.returncode == 0, result.stderr
    install, pytest_run = log.read_text().splitlines()
    assert install == f"{ROOT} -m pip install --quiet --disable-pip-version-check -e .[test]"
    assert pytest_run == (
        f"{ROOT} -m pytest -p no:cacheprovider "
        "tests/unit tests/integration tests/manifests tests/e2e"
    )


def test_run_tests_gives_up_when_postgres_never_comes(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused
        result = run(
            ["bash", str(SCRIPTS / "run-tests.sh")],
            env={
                **fake_python(tmp_path, tmp_path / "python.log"),
                "TEST_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/postgres",
                "DB_WAIT_SECONDS": "1",
            },
        )
    assert result.returncode != 0
    assert "did not come up" in result.stderr
    assert not (tmp_path / "python.log").exists()


# --- pipelinerun.py and make pipeline ------------------------------------------------------


def load_pipelinerun_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pipelinerun", SCRIPTS / "pipelinerun.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def start(*args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path} if path else None
    return run([sys.executable, str(SCRIPTS / "pipelinerun.py"), *args], env=env)


FULL = ["--repo-url", "https://github.com/alice/shop.git", "--revision", "abc123",
        "--docker-user", USER, "--tag", TAG]  # fmt: skip


def test_dry_run_prints_a_valid_pipelinerun_with_the_params() -> None:
    result = start(*FULL, "--overlay", "eventing", "--dry-run")
    assert result.returncode == 0, result.stderr
    run_doc: dict[str, Any] = yaml.safe_load(result.stdout)
    assert validate_document(run_doc) == []
    assert {p["name"]: p["value"] for p in run_doc["spec"]["params"]} == {
        "repo-url": "https://github.com/alice/shop.git",
        "revision": "abc123",
        "docker-user": USER,
        "tag": TAG,
        "overlay": "eventing",
    }


def test_start_says_exactly_what_is_missing(tmp_path: Path) -> None:
    result = start("--repo-url", "", "--revision", "x", "--tag", "t", "--dry-run")
    assert result.returncode == 2
    assert "missing: REPO_URL=" in result.stderr and "DOCKER_USER=" in result.stderr
    result = start(*FULL[:4], "--docker-user", "change-me", "--tag", "t", "--dry-run")
    assert result.returncode == 2 and "missing: DOCKER_USER=" in result.stderr

    no_kubectl = tmp_path / "empty"
    no_kubectl.mkdir()
    result = start(*FULL, path=str(no_kubectl))
    assert result.returncode == 2 and "kubectl is not on PATH" in result.stderr

    # kubectl answers each check in turn: context, Tekton CRD, the Pipeline, the Secret
    checks = ["config current-context", "get crd pipelineruns.tekton.dev",
              "get pipeline cqrs-build-deploy", "get secret docker-hub-credentials"]  # fmt: skip
    messages = ["no current context", "no Tekton Pipelines", "no Pipeline cqrs-build-deploy",
                "no Secret docker-hub-credentials"]  # fmt: skip
    for failing, message in zip(checks, messages, strict=True):
        fake(tmp_path / "bin", "kubectl", f'[[ "$*" == "{failing}"* ]] && exit 1\nexit 0\n')
        result = start(*FULL, path=f"{tmp_path / 'bin'}:/usr/bin:/bin")
        assert result.returncode == 2, failing
        assert message in result.stderr


def test_start_creates_the_run(tmp_path: Path) -> None:
    created = tmp_path / "created.yaml"
    fake(
        tmp_path / "bin",
        "kubectl",
        f'if [[ "$1" == create ]]; then cat >{created}; echo pipelinerun.tekton.dev/r-x1; fi\n',
    )
    result = start(*FULL, path=f"{tmp_path / 'bin'}:/usr/bin:/bin")
    assert result.returncode == 0, result.stderr
    assert "tkn pipelinerun logs -f r-x1 -n cqrs-ci" in result.stdout
    assert yaml.safe_load(created.read_text())["metadata"]["generateName"]


def test_ssh_remotes_become_https() -> None:
    module = load_pipelinerun_module()
    assert module.https_url("git@github.com:alice/shop.git") == "https://github.com/alice/shop.git"
    assert module.https_url("https://github.com/alice/shop.git") == (
        "https://github.com/alice/shop.git"
    )
    with pytest.raises(ValueError, match="no param"):
        module.render({"no-such-param": "x"})


def test_make_pipeline(tmp_path: Path) -> None:
    make = ["make", "-s", "--no-print-directory", "pipeline", f"DOCKER_USER={USER}",
            "REPO_URL=https://github.com/alice/shop.git"]  # fmt: skip
    result = run([*make, "PIPELINE_DRY_RUN=1"])
    assert result.returncode == 0, result.stderr
    run_doc = yaml.safe_load(result.stdout)
    assert validate_document(run_doc) == []
    params = {p["name"]: p["value"] for p in run_doc["spec"]["params"]}
    head = run(["git", "rev-parse", "HEAD"]).stdout.strip()
    assert params["revision"] == head and params["tag"] == head[:12]

    fake(tmp_path / "bin", "kubectl", "exit 1\n")  # a kubectl with no context
    result = run(make, env={"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"})
    assert result.returncode != 0
    assert "make pipeline: kubectl has no current context" in result.stderr

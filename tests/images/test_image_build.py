"""Build one role's image with functions/Dockerfile on this machine and run it.

No base image can be pulled here, so the image builds on the python base of
devtools/cluster/images.py (debootstrapped from this machine's own apt sources, with python3,
python3-venv and this machine's pip configuration in /etc/pip.conf, so pip in the build reaches
the package index), with that module's private dockerd (no iptables, host network). Its layers
and bases are cached under ~/.cache/cqrs-shop, so a second run takes seconds. Needs root;
installs docker.io and debootstrap with apt if they are missing. Fails, never skips, when the
engine cannot be set up. Run with `make test-images`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cqrs_common.roles import ROLES_BY_NAME
from devtools.cluster.images import Builder, proxy_build_args
from devtools.stack import wiring
from tests.support import NOWHERE

pytestmark = pytest.mark.images

ROOT = Path(__file__).resolve().parents[2]
ROLE = os.environ.get("IMAGE_TEST_ROLE", "dispatcher")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def builder() -> Iterator[Builder]:
    """A dockerd of our own; `builder.env` reaches it."""
    with Builder() as engine:
        yield engine


@pytest.fixture(scope="module")
def image(builder: Builder) -> str:
    tag = f"cqrs-{ROLE}:image-test"
    started = time.monotonic()
    builder.docker(
        "build", "--force-rm", "--network", "host", "-f", str(ROOT / "functions" / "Dockerfile"),
        "--build-arg", f"BASE_IMAGE={builder.base('python')}", "--build-arg", f"ROLE={ROLE}",
        *proxy_build_args(), "-t", tag, str(ROOT / "functions"),
        timeout=900,
    )  # fmt: skip
    # shown with -s (make test-images)
    print(f"{tag}: base and image in {time.monotonic() - started:.1f}s", flush=True)
    return tag


def test_image_runs_the_role_and_answers_healthz(builder: Builder, image: str) -> None:
    port = free_port()
    # The wiring a Knative Service gives the role (without it the role stops at start, naming
    # what is missing); every other role at the discard port: /healthz needs none of them.
    wired = wiring(ROLES_BY_NAME[ROLE], lambda _name: NOWHERE, "sqlite:////tmp/store.sqlite3")
    wired["PORT"] = str(port)
    started = builder.docker(
        "run", "-d", "--network", "host", *(f"--env={k}={v}" for k, v in sorted(wired.items())),
        image, timeout=60,
    )  # fmt: skip
    cid = started.stdout.strip()
    try:
        status, deadline = None, time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                status = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code
                if status == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        logs = subprocess.run(
            ["docker", "logs", cid], env=builder.env, capture_output=True, text=True
        )
        assert status == 200, f"/healthz: {status}\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}"

        def exec_(*cmd: str) -> str:
            return builder.docker("exec", cid, *cmd, timeout=30).stdout

        # exec'd: gunicorn itself is PID 1, so SIGTERM from Kubernetes reaches it
        assert "gunicorn" in exec_("cat", "/proc/1/cmdline")
        assert exec_("id", "-u").strip() == "10001"
        # no test dependencies in the image
        probe = (
            "import importlib.util as u; print([m for m in ('pytest', 'ruff') if u.find_spec(m)])"
        )
        assert exec_("python3", "-c", probe).strip() == "[]"
    finally:
        subprocess.run(["docker", "rm", "-f", cid], env=builder.env, capture_output=True)

    config = json.loads(builder.docker("inspect", image, timeout=30).stdout)[0]["Config"]
    assert config["User"] == "10001:10001"
    assert {"PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1", f"ROLE={ROLE}"} <= set(config["Env"])

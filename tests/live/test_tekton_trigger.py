"""The pipeline's push trigger on the node (tekton/, applied as docs/tekton.md has it): a
GitHub-style push webhook signed with the webhook Secret, posted to the EventListener, starts a
PipelineRun for that revision; one signed with another secret, or for another branch, starts
nothing. (The PipelineRun is deleted at once: its first task fetches a Task from GitHub.)"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import subprocess
import time

from devtools.cluster.node import REPO
from tests.live.live import Live, wait_until

CI_NAMESPACE = "cqrs-ci"
LISTENER = "cqrs-github"


def push(after: str, ref: str = "refs/heads/main") -> bytes:
    """The fields of GitHub's push event the trigger reads (TriggerBinding, CEL filter)."""
    return json.dumps({
        "ref": ref,
        "after": after,
        "deleted": False,
        "repository": {"clone_url": "http://git.cqrs-ci.svc/cqrs-shop.git"},
    }).encode()  # fmt: skip


def post(live: Live, body: bytes, secret: str) -> int | None:
    """POST the event to the EventListener's Service from inside the node, signed as GitHub
    signs (X-Hub-Signature-256: HMAC-SHA256 of the body); the HTTP status, None when nothing
    answered (the Service's rules not yet in place)."""
    address = live.kubectl(
        "-n", CI_NAMESPACE, "get", "service", f"el-{LISTENER}",
        "-o", "jsonpath={.spec.clusterIP}:{.spec.ports[?(@.name=='http-listener')].port}",
    ).strip()  # fmt: skip
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    done = subprocess.run(
        live.node.inside(
            "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20",
            "-H", "Content-Type: application/json", "-H", "X-GitHub-Event: push",
            "-H", f"X-Hub-Signature-256: {signature}", "--data-binary", "@-",
            f"http://{address}/",
        ),
        input=body, capture_output=True, timeout=60,
    )  # fmt: skip
    return int(done.stdout) if done.returncode == 0 else None


def pipeline_runs(live: Live) -> dict[str, str]:
    """Each PipelineRun of the namespace and the revision it builds."""
    listed = live.json("-n", CI_NAMESPACE, "get", "pipelineruns")["items"]
    return {
        run["metadata"]["name"]: next(
            p["value"] for p in run["spec"]["params"] if p["name"] == "revision"
        )
        for run in listed
    }


def test_a_signed_push_starts_a_pipelinerun_for_its_revision_and_a_forged_one_nothing(
    live: Live,
) -> None:
    live.kubectl("apply", "-k", str(REPO / "tekton"))
    secret = secrets.token_hex(20)
    manifest = live.kubectl(
        "-n", CI_NAMESPACE, "create", "secret", "generic", "github-webhook-secret",
        f"--from-literal=secret={secret}", "--dry-run=client", "-o", "json",
    )  # fmt: skip
    live.kubectl("apply", "-f", "-", input=manifest)
    live.kubectl(
        "-n", CI_NAMESPACE, "wait", "--for=condition=Ready", f"eventlistener/{LISTENER}",
        "--timeout=240s", timeout=300,
    )  # fmt: skip
    live.kubectl(
        "-n", CI_NAMESPACE, "rollout", "status", f"deployment/el-{LISTENER}", "--timeout=240s",
        timeout=300,
    )  # fmt: skip
    # Answering at all: an unsigned, empty event (refused by the interceptor, starts nothing).
    wait_until(lambda: post(live, b"{}", ""), timeout=60, what="the EventListener answering")
    before = pipeline_runs(live)
    try:
        forged, other_branch, good = (secrets.token_hex(20) for _ in range(3))
        assert post(live, push(forged), secrets.token_hex(20)) in (202, 400, 403)
        assert post(live, push(other_branch, "refs/heads/dev"), secret) in (202, 400, 403)
        assert post(live, push(good), secret) == 202

        def started() -> dict[str, str] | None:
            new = {n: r for n, r in pipeline_runs(live).items() if n not in before}
            return new or None

        wait_until(started, timeout=60, what="a PipelineRun for the signed push")
        time.sleep(5)  # the refused ones would have been created by now too
        new = {n: r for n, r in pipeline_runs(live).items() if n not in before}
        assert sorted(new.values()) == [good], new
    finally:
        for name in set(pipeline_runs(live)) - set(before):
            live.kubectl("-n", CI_NAMESPACE, "delete", "pipelinerun", name, "--wait=false")

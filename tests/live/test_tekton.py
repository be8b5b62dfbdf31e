"""Tekton Pipelines on the node: a TaskRun with a script step runs in a pod to Succeeded, and
its result is read back (the controller, the webhook, the entrypoint and the shell images)."""

from __future__ import annotations

import json

from devtools.cluster import images
from tests.live.live import Live, wait_until

NAMESPACE = "tekton-smoke"


def test_a_taskrun_with_a_script_step_succeeds_and_gives_its_result(live: Live) -> None:
    task_run = {
        "apiVersion": "tekton.dev/v1",
        "kind": "TaskRun",
        "metadata": {"generateName": "smoke-", "namespace": NAMESPACE},
        "spec": {
            "taskSpec": {
                "results": [{"name": "greeting", "type": "string"}],
                "steps": [
                    {
                        "name": "greet",
                        "image": images.CURL,  # a stand-in the node has (Debian, with sh)
                        "script": "#!/bin/sh\nset -e\nprintf hello > $(results.greeting.path)\n",
                    }
                ],
            }
        },
    }
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    live.kubectl("apply", "-f", "-", input=json.dumps(namespace))
    name = live.kubectl("create", "-o", "name", "-f", "-", input=json.dumps(task_run)).strip()
    try:

        def done() -> dict | None:
            status = live.json("-n", NAMESPACE, "get", name).get("status", {})
            found = [c for c in status.get("conditions", []) if c["type"] == "Succeeded"]
            return status if found and found[0]["status"] != "Unknown" else None

        status = wait_until(done, timeout=300, what=f"{name} to finish")
        condition = next(c for c in status["conditions"] if c["type"] == "Succeeded")
        assert condition["status"] == "True", condition
        results = {r["name"]: r["value"] for r in status.get("results", [])}
        assert results == {"greeting": "hello"}, status
    finally:
        live.kubectl("-n", NAMESPACE, "delete", name, "--wait=false")

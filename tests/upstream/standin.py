"""Stand-ins for the controllers a bare API server lacks, for as long as a deploy runs.

The API server, its validation and its authorizer are real; what no process here runs is
the controllers that would make the objects ready: CloudNativePG (a Cluster becomes Ready and
its `<name>-app` Secret appears), the StatefulSet controller and Knative Serving (a Service
becomes Ready). This does each of those status writes, and only those, so `make deploy`'s
waits can be exercised without pods.
"""

from __future__ import annotations

import base64
import json
import threading
from datetime import UTC, datetime
from types import TracebackType

from tests.upstream.controlplane import ControlPlane

NAMESPACE = "cqrs"


def _ready_condition() -> dict[str, str]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "type": "Ready",
        "status": "True",
        "reason": "StandIn",
        "message": "made ready by the test's stand-in controller",
        "lastTransitionTime": now,
    }


class StandInControllers:
    """with StandInControllers(cp): ... marks what appears in namespace cqrs as ready."""

    def __init__(self, cp: ControlPlane, *, interval: float = 0.3) -> None:
        self.cp = cp
        self.interval = interval
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.made_ready: list[str] = []
        self.errors: list[str] = []

    def __enter__(self) -> StandInControllers:
        self.thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.done.set()
        self.thread.join(timeout=30)
        assert not self.errors, "the stand-in controllers failed: " + "; ".join(self.errors)

    def _items(self, resource: str) -> list[dict]:
        out = self.cp.kubectl("get", resource, "-n", NAMESPACE, "-o", "json", check=False)
        return json.loads(out.stdout)["items"] if out.returncode == 0 else []

    def _status(self, resource: str, name: str, status: dict) -> None:
        self.cp.kubectl(
            "patch", resource, name, "-n", NAMESPACE, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": status}),
        )  # fmt: skip
        self.made_ready.append(f"{resource}/{name}")

    def _step(self) -> None:
        for cluster in self._items("clusters.postgresql.cnpg.io"):
            name = cluster["metadata"]["name"]
            if not cluster.get("status", {}).get("conditions"):
                uri = f"postgresql://app@{name}-rw.{NAMESPACE}.svc:5432/app"
                secret = {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": f"{name}-app", "namespace": NAMESPACE},
                    "data": {"uri": base64.b64encode(uri.encode()).decode()},
                }
                self.cp.kubectl("apply", "-f", "-", input=json.dumps(secret))
                self._status("clusters.postgresql.cnpg.io", name, {
                    "conditions": [_ready_condition()], "phase": "Cluster in healthy state",
                })  # fmt: skip
        for sts in self._items("statefulsets.apps"):
            replicas = sts["spec"].get("replicas", 1)
            if sts.get("status", {}).get("readyReplicas") != replicas:
                self._status("statefulsets.apps", sts["metadata"]["name"], {
                    "replicas": replicas, "readyReplicas": replicas,
                    "observedGeneration": sts["metadata"]["generation"],
                })  # fmt: skip
        for ksvc in self._items("services.serving.knative.dev"):
            status = ksvc.get("status", {})
            if status.get("observedGeneration") != ksvc["metadata"]["generation"]:
                name = ksvc["metadata"]["name"]
                self._status("services.serving.knative.dev", name, {
                    "observedGeneration": ksvc["metadata"]["generation"],
                    "conditions": [_ready_condition()],
                    "url": f"http://{name}.{NAMESPACE}.svc.cluster.local",
                })  # fmt: skip

    def _loop(self) -> None:
        while not self.done.wait(self.interval):
            try:
                self._step()
            except Exception as exc:  # reported at exit, where the test can fail on it
                self.errors.append(repr(exc))

"""What the live tests use: the cluster's kubectl, the shop through the ingress by Host header,
the roles' pods, the autoscaler's configuration, and pods of their own inside the cluster."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests

from cqrs_common.roles import ROLES
from devtools.cluster import images
from devtools.cluster.node import Node
from tests.support import wait_for

T = TypeVar("T")
NAMESPACE = "cqrs"
SERVICES = tuple(role.service for role in ROLES)
Totals = dict[str, tuple[int, Decimal]]
# config-autoscaler for the tests: a revision with no traffic for 10 s goes to zero 6 s later
# (upstream: 60 s and 30 s); 10 s keeps the panic window (10 %) at the 1 s it may not go under.
FAST_AUTOSCALER = {"stable_window": "10s", "scale_to_zero_grace_period": "6s"}


def wait_until(
    check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.5
) -> T:
    """tests.support.wait_for, with what it waits for named."""
    return wait_for(check, timeout, interval, what=f"{what}: not")


class Live:
    def __init__(self, node: Node, ingress: str) -> None:
        self.node = node
        self.ingress = ingress

    # --- kubectl ---

    def kubectl(self, *args: str, **kwargs: Any) -> str:
        return self.node.kubectl(*args, **kwargs).stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json"))

    # --- the shop through the ingress ---

    def url(self, service: str) -> str:
        """The Knative Service's URL (status.url)."""
        return self.json("-n", NAMESPACE, "get", "ksvc", service)["status"]["url"]

    def host(self, service: str = "cqrs-dispatcher") -> str:
        return urlsplit(self.url(service)).netloc

    def shop(self, host: str | None = None) -> Shop:
        return Shop(f"http://{self.ingress}", host or self.host())

    # --- pods ---

    def pods(self, service: str) -> list[str]:
        """The service's pods that run and are not going away."""
        found = self.json(
            "-n", NAMESPACE, "get", "pods", "-l", f"serving.knative.dev/service={service}"
        )
        return [
            pod["metadata"]["name"]
            for pod in found["items"]
            if not pod["metadata"].get("deletionTimestamp")
            and pod["status"].get("phase") in ("Pending", "Running")
        ]

    def pod_counts(self, services: Sequence[str] = SERVICES) -> dict[str, int]:
        found = self.json("-n", NAMESPACE, "get", "pods", "-l", "serving.knative.dev/service")
        counts = dict.fromkeys(services, 0)
        for pod in found["items"]:
            service = pod["metadata"]["labels"]["serving.knative.dev/service"]
            alive = pod["status"].get("phase") in ("Pending", "Running")
            if service in counts and alive and not pod["metadata"].get("deletionTimestamp"):
                counts[service] += 1
        return counts

    def wait_for_zero(self, services: Sequence[str] = SERVICES, timeout: float = 240) -> None:
        wait_until(
            lambda: not any(self.pod_counts(services).values()),
            timeout,
            f"all of {', '.join(services)} at zero pods ({self.pod_counts(services)})",
            interval=2,
        )

    # --- configuration ---

    @contextlib.contextmanager
    def autoscaler(self, **settings: str) -> Iterator[None]:
        """config-autoscaler with these keys for the duration, as an operator patches it."""
        name = ("-n", "knative-serving", "configmap", "config-autoscaler")
        before = self.json("get", *name).get("data") or {}
        patch = {"data": {k.replace("_", "-"): v for k, v in settings.items()}}
        self.kubectl("patch", *name, "--type=merge", f"-p={json.dumps(patch)}")
        try:
            yield
        finally:
            restore = {k: before.get(k) for k in patch["data"]}  # None removes a key
            self.kubectl("patch", *name, "--type=merge", f"-p={json.dumps({'data': restore})}")

    # --- pods of the tests' own ---

    def run_pod(
        self,
        script: str,
        *,
        service_account: str,
        audiences: Sequence[str] = (),
        timeout: float = 180,
    ) -> str:
        """Runs `script` (sh) in a pod of namespace cqrs under `service_account`, with a
        projected token per audience at /tokens/<audience>, and returns its log. The image is
        the stand-in of curlimages/curl, which the node has: a shell and curl."""
        name = f"live-{uuid.uuid4().hex[:8]}"
        sources = [
            {"serviceAccountToken": {"audience": a, "path": a, "expirationSeconds": 3600}}
            for a in audiences
        ]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "live-test"}},
            "spec": {
                "restartPolicy": "Never",
                "serviceAccountName": service_account,
                "automountServiceAccountToken": False,
                "volumes": [{"name": "tokens", "projected": {"sources": sources}}]
                if sources
                else [],
                "containers": [
                    {
                        "name": "probe",
                        "image": images.CURL,
                        "imagePullPolicy": "Never",
                        "command": ["sh", "-c", script],
                        "volumeMounts": [{"name": "tokens", "mountPath": "/tokens"}]
                        if sources
                        else [],
                        "securityContext": {
                            "runAsNonRoot": True,
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                    }
                ],
            },
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(pod))
        try:
            wait_until(
                lambda: (
                    self.json("-n", NAMESPACE, "get", "pod", name)["status"].get("phase")
                    in ("Succeeded", "Failed")
                ),
                timeout,
                f"pod {name} to finish",
                interval=1,
            )
            return self.kubectl("-n", NAMESPACE, "logs", name)
        finally:
            self.kubectl("-n", NAMESPACE, "delete", "pod", name, "--wait=false", check=False)


class Shop:
    """The dispatcher's public API, through the ingress with a Host header."""

    def __init__(self, base_url: str, host: str) -> None:
        self.base_url = base_url
        self.host = host
        self.session = requests.Session()
        self.session.headers["Host"] = host

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 60)
        kwargs.setdefault("allow_redirects", False)
        return self.session.request(method, self.base_url + path, **kwargs)

    def order(
        self, product: str, quantity: int, unit_price: str, key: str | None = None
    ) -> requests.Response:
        headers = {"Idempotency-Key": key} if key else {}
        return self.request(
            "POST",
            "/api/orders",
            json={"product": product, "quantity": quantity, "unitPrice": unit_price},
            headers=headers,
        )

    def totals(self) -> Totals:
        response = self.request("GET", "/api/stats")
        response.raise_for_status()
        body = response.json()
        found = {
            product: (row["quantity"], Decimal(row["totalPrice"]))
            for product, row in body["products"].items()
        }
        found["orders"] = (body["ordersCounted"], Decimal(0))
        return found

    def status(self, order_id: str) -> str | None:
        response = self.request("GET", f"/api/orders/{order_id}")
        return response.json().get("status") if response.status_code == 200 else None


def added(before: Totals, orders: Sequence[tuple[str, int, str]]) -> Totals:
    """`before` plus these (product, quantity, unit price) orders."""
    after = dict(before)
    for product, quantity, price in orders:
        count, total = after.get(product, (0, Decimal(0)))
        after[product] = (count + quantity, total + Decimal(price) * quantity)
    count, zero = after["orders"]
    after["orders"] = (count + len(orders), zero)
    return after


class Load:
    """Orders placed from `threads` threads through the ingress for as long as it runs, each
    with its own Idempotency-Key and sent again with that key after any answer but a 202 or a
    400 (a 503 or a lost answer does not say whether it was stored): so that every order is
    accepted once, however the cluster behaves meanwhile. Bounded: it stops by itself after
    `limit` seconds, and `stop()` waits for every order begun to be accepted (or gives up)."""

    ORDER = ("apple", 1, "0.25")

    def __init__(self, live: Live, threads: int = 8, limit: float = 300) -> None:
        self.live = live
        self.threads = threads
        self.limit = limit
        self.accepted: dict[str, str] = {}  # key: order id
        self.answers: dict[str, int] = {}  # what the tries were answered (status, or "error")
        self.latencies: list[float] = []  # seconds, of each accepted order's 202
        self.unsettled: list[str] = []  # keys still unanswered when time ran out
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._workers: list[threading.Thread] = []
        self._deadline = 0.0

    def __enter__(self) -> Load:
        self._deadline = time.monotonic() + self.limit
        for n in range(self.threads):
            worker = threading.Thread(target=self._run, name=f"load-{n}", daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, settle: float = 180) -> None:
        """Stops placing new orders; those begun keep being retried up to `settle` seconds."""
        self._stopping.set()
        self._deadline = min(self._deadline, time.monotonic() + settle)
        for worker in self._workers:
            worker.join()
        self._workers.clear()

    def _count(self, answer: str) -> None:
        with self._lock:
            self.answers[answer] = self.answers.get(answer, 0) + 1

    def _run(self) -> None:
        shop = self.live.shop()
        while not self._stopping.is_set() and time.monotonic() < self._deadline:
            key = f"load-{uuid.uuid4()}"
            started = time.monotonic()
            while time.monotonic() < self._deadline:
                try:
                    response = shop.order(*self.ORDER, key=key)
                except requests.RequestException as error:
                    self._count(type(error).__name__)
                    time.sleep(0.5)
                    continue
                self._count(str(response.status_code))
                if response.status_code == 202:
                    with self._lock:
                        self.accepted[key] = response.json()["orderId"]
                        self.latencies.append(time.monotonic() - started)
                    break
                if response.status_code == 400:
                    raise AssertionError(f"the load's order was refused: {response.text}")
                time.sleep(0.5)
            else:
                with self._lock:
                    self.unsettled.append(key)  # it may or may not have been stored
                return

    def expected(self, before: Totals) -> Totals:
        return added(before, [self.ORDER] * len(self.accepted))


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

"""Every accepted order is counted exactly once while the cluster fails under it: the roles
scaled from zero as orders arrive, a pod of every role deleted and then force-deleted, the
database's pod restarted. Orders are placed with Idempotency-Keys and retried until accepted,
as a client of the public API would."""

from __future__ import annotations

import time
from typing import Any

import requests

from tests.live.live import FAST_AUTOSCALER, NAMESPACE, SERVICES, Live, Load, wait_until

DATABASE_POD = "cqrs-postgres-0"  # knative/postgres/single's StatefulSet


def _read(shop: Any) -> bool:
    """A read of the totals, to wake the read side: while the pods deleted just before are being
    replaced, it may be answered 503 or 504 (and asked again)."""
    try:
        return bool(shop.totals())
    except requests.HTTPError:
        return False


def _delete_one_pod_of_each(live: Live, *flags: str) -> list[str]:
    # the write load keeps the write side up; a read wakes the read side
    shop = live.shop()
    wait_until(lambda: _read(shop) and all(live.pod_counts().values()), 120, "a pod of every role")
    deleted = []
    for service in SERVICES:
        pods = live.pods(service)
        if pods:
            live.kubectl("-n", NAMESPACE, "delete", "pod", pods[0], "--wait=false", *flags)
            deleted.append(pods[0])
    return deleted


def test_every_accepted_order_is_counted_once_through_faults(live: Live) -> None:
    shop = live.shop()
    with live.autoscaler(**FAST_AUTOSCALER):
        before = shop.totals()
        live.wait_for_zero()
        with Load(live, threads=6, limit=600) as load:
            # scaled from zero while the orders arrive
            wait_until(lambda: len(load.accepted) >= 20, 180, "20 orders accepted from zero")
            deleted = _delete_one_pod_of_each(live)
            wait_until(lambda: len(load.accepted) >= 60, 180, "orders accepted after deletion")
            deleted += _delete_one_pod_of_each(live, "--force", "--grace-period=0")
            wait_until(lambda: len(load.accepted) >= 100, 180, "orders accepted after --force")
            live.kubectl("-n", NAMESPACE, "delete", "pod", DATABASE_POD, "--wait=false")
            live.kubectl(
                "-n", NAMESPACE, "rollout", "status", "statefulset/cqrs-postgres",
                "--timeout=180s", timeout=200,
            )  # fmt: skip
            accepted = len(load.accepted)
            wait_until(lambda: len(load.accepted) >= accepted + 40, 240, "orders after the restart")
            time.sleep(5)
    print(
        f"\nfaults: {len(load.accepted)} orders accepted, answers {load.answers},"
        f" pods deleted {len(deleted)}"
    )
    assert len(deleted) >= len(SERVICES), deleted
    assert not load.unsettled, load.unsettled
    want = load.expected(before)
    wait_until(lambda: shop.totals() == want, 300, f"the totals at {want}")
    # and they stay so: nothing counted twice later (a relay retry, a replayed delta)
    time.sleep(15)
    assert shop.totals() == want

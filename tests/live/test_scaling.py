"""Knative scales the roles on the shop's own traffic: all six to zero when idle, woken by an
order through the activator, and the write side out under write load while the read side
stays where it is. The numbers (cold start, pods per role over time) are printed (-s)."""

from __future__ import annotations

import time
import uuid

from tests.live.live import FAST_AUTOSCALER, SERVICES, Live, Load, added, percentile, wait_until

ROUNDS = 4
WRITE_SIDE = ("cqrs-dispatcher", "cqrs-command-order", "cqrs-order-db")
READ_SIDE = "cqrs-query-order"


def test_all_six_scale_to_zero_and_an_order_wakes_them(live: Live) -> None:
    shop = live.shop()
    order = ("pear", 1, "0.75")
    with live.autoscaler(**FAST_AUTOSCALER):
        before = shop.totals()
        to_accepted, to_counted = [], []
        for _ in range(ROUNDS):
            live.wait_for_zero()
            started = time.monotonic()
            response = shop.order(*order, key=f"cold-{uuid.uuid4()}")
            to_accepted.append(time.monotonic() - started)
            assert response.status_code == 202, response.text
            want = added(before, [order] * (len(to_accepted)))
            wait_until(lambda want=want: shop.totals() == want, 180, f"the totals at {want}")
            to_counted.append(time.monotonic() - started)
    print(
        f"\ncold start, {ROUNDS} orders with all six roles at zero pods:"
        f"\n  to its 202:           p50 {percentile(to_accepted, 0.5):.1f} s,"
        f" worst {max(to_accepted):.1f} s"
        f"\n  to it in the totals:  p50 {percentile(to_counted, 0.5):.1f} s,"
        f" worst {max(to_counted):.1f} s"
    )


def test_write_load_scales_the_write_side_and_not_the_read_side(live: Live) -> None:
    shop = live.shop()
    before = shop.totals()
    samples: list[tuple[float, dict[str, int]]] = []
    with live.autoscaler(**FAST_AUTOSCALER):
        live.wait_for_zero([READ_SIDE])
        with Load(live, threads=16, limit=240) as load:
            started = time.monotonic()
            while time.monotonic() - started < 90:
                samples.append((time.monotonic() - started, live.pod_counts()))
                time.sleep(3)
    print(f"\npods per role under write load ({len(load.accepted)} orders accepted in 90 s):")
    print("   t/s  " + "  ".join(s.removeprefix("cqrs-") for s in SERVICES))
    for at, counts in samples:
        cells = "  ".join(f"{counts[s]:>{len(s) - 5}}" for s in SERVICES)
        print(f"  {at:4.0f}  {cells}")
    most = {s: max(counts[s] for _, counts in samples) for s in SERVICES}
    assert any(most[s] >= 2 for s in WRITE_SIDE), most
    assert most[READ_SIDE] == 0, most
    assert not load.unsettled
    want = load.expected(before)
    wait_until(lambda: shop.totals() == want, 300, f"the totals at {want}")

"""Knative's own KIngress conformance suite (knative.dev/networking test/conformance/ingress)
against the stand-in ingress, Traefik's Knative provider, on the project's node.

The stable tests run, less the one Traefik's own conformance run skips (UPSTREAM_SKIPS). Those
known to fail here are listed with the reason: the test fails when one of them starts to pass
(the list is then out of date) as much as when another one fails."""

from __future__ import annotations

from devtools.cluster import knative
from tests.live.live import Live

# RunConformance's stable tests that Traefik v3.7 does not pass on this node, and why.
KNOWN_FAILURES: dict[str, str] = {}


def test_knatives_kingress_conformance_on_the_stand_in_ingress(live: Live) -> None:
    result = knative.run_conformance_on_node(live.node, parallel=2, timeout=1500)
    suite = result.suite()
    print(f"\nKIngress conformance ({knative.TRAEFIK_CLASS}):")
    for status in ("pass", "fail", "skip"):
        print(f"  {status}: {', '.join(result.named(status)) or '-'}")
    stable = {name for name, level in knative.suite_tests().items() if level == "stable"}
    ran = stable - set(knative.UPSTREAM_SKIPS)
    assert ran <= set(suite), f"not run: {sorted(ran - set(suite))}\n{result.output[-3000:]}"
    failed = set(result.named("fail"))
    assert failed == set(KNOWN_FAILURES), result.output[-6000:]

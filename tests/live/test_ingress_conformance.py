"""Knative's own KIngress conformance suite (knative.dev/networking test/conformance/ingress)
against the stand-in ingress, Traefik's Knative provider, on the project's node.

The stable tests run, less the one Traefik's own conformance run skips (UPSTREAM_SKIPS). Those
known to fail here would be listed with the reason (none is): the test fails when one of them
starts to pass (the list is then out of date) as much as when another one fails."""

from __future__ import annotations

from devtools.cluster import knative
from tests.live.live import Live

# RunConformance's stable tests that Traefik v3.7 does not pass on this node, and why.
KNOWN_FAILURES: dict[str, str] = {}
# Run alone after the others: it counts every failed request while a KIngress changes under
# steady traffic, and on two CPUs shared with the parallel tests it lost some (it passes alone).
ALONE = ("update",)


def test_knatives_kingress_conformance_on_the_stand_in_ingress(live: Live) -> None:
    together = knative.run_conformance_on_node(
        live.node, skip=(*knative.UPSTREAM_SKIPS, *ALONE), parallel=2, timeout=1500
    )
    suite = together.suite()
    outputs = [together.output]
    for name in ALONE:
        alone = knative.run_conformance_on_node(
            live.node, run=f"{knative.CONFORMANCE_TEST}/{name}$", timeout=900
        )
        suite[name] = alone.suite().get(name, "fail")
        outputs.append(alone.output)
    named = {s: sorted(n for n, v in suite.items() if v == s) for s in ("pass", "fail", "skip")}
    print(f"\nKIngress conformance ({knative.TRAEFIK_CLASS}):")
    for status, names in named.items():
        print(f"  {status}: {', '.join(names) or '-'}")
    stable = {name for name, level in knative.suite_tests().items() if level == "stable"}
    ran = stable - set(knative.UPSTREAM_SKIPS)
    assert ran <= set(suite), f"not run: {sorted(ran - set(suite))}"
    failed = set(named["fail"])
    if failed != set(KNOWN_FAILURES):
        log = "\n".join(line for out in outputs for line in out.splitlines()
                        if "deprecated" not in line and "Got OK status" not in line)  # fmt: skip
        raise AssertionError(f"failed: {sorted(failed)}, known: {sorted(KNOWN_FAILURES)}\n"
                             f"{log[-8000:]}")  # fmt: skip

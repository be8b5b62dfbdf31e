"""Build every Go binary the upstream tests use, before they need them.

`.ci/run` starts this in the background at its first step, at the lowest CPU priority, so that
on a machine without the binaries cached (devtools/gobuild.py) Go's downloads and builds
overlap with the package installs and with the idle moments of the other tests instead of
adding their minutes at the end. Safe beside the tests: each binary is built once, under a lock,
and a test that needs one first simply waits for it. Standard library only (it runs before the
virtualenv exists): `python3 -m tests.upstream.prebuild`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from devtools import upstream
from tests.upstream import validators


def _cluster_builds() -> list[tuple[str, Callable[[], Path]]]:
    """The live tier's node (devtools/cluster): Knative, its ingress, Tekton, DNS, the CRI
    tools; runc and pause last, as they need the C headers .ci/run installs meanwhile."""
    try:  # PyYAML: of the machine's Python, or none
        from devtools.cluster import images, knative, tekton
    except ImportError as exc:
        print(f"prebuild: not the cluster's binaries: {exc}", file=sys.stderr, flush=True)
        return []
    serving = (*knative.SERVING_COMMANDS, *knative.TEST_IMAGES)
    return [
        *((f"knative-{n}", partial(knative.knative_binary, n)) for n in serving),
        ("knative-ingress-conformance", knative.conformance_binary),
        ("traefik", knative.traefik_binary),
        *((f"tekton-{m}-{n}", partial(tekton.binary, m, n)) for m, n in tekton.builds()),
        ("coredns", upstream.coredns),
        ("crictl", upstream.crictl),
        ("runc", upstream.runc),
        ("pause", images.pause_binary),
    ]


def main() -> int:
    builds: list[tuple[str, Callable[[], Path]]] = [
        # kube-apiserver first: the longest, and the other four reuse most of what it compiles
        *((name, partial(upstream.kubernetes, name)) for name in upstream.KUBERNETES),
        ("etcd", upstream.etcd),
        *((f"validate-{p}", partial(validators.binary, p)) for p in validators.PROJECTS),
        *_cluster_builds(),
    ]
    failed = 0
    for name, build in builds:
        started = time.monotonic()
        try:
            path = build()
        except Exception as exc:  # the test that needs it builds it again and says why
            failed += 1
            print(f"prebuild: {name} failed: {exc}", file=sys.stderr, flush=True)
            continue
        print(f"prebuild: {name} ready in {time.monotonic() - started:.0f} s: {path}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Build every Go binary the upstream tests use, before they need them.

`.ci/run` starts this in the background at its first step, at the lowest CPU priority, so that
on a machine without the binaries cached (tests/upstream/gobuild.py) Go's downloads and builds
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

from tests.upstream import controlplane, validators


def main() -> int:
    builds: list[tuple[str, Callable[[], Path]]] = [
        ("kube-apiserver", controlplane.apiserver_binary),  # the longest first
        ("etcd", controlplane.etcd_binary),
        *((f"validate-{p}", partial(validators.binary, p)) for p in validators.PROJECTS),
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

"""The project's node with Knative and the shop on it (make cluster-up, cluster-down).

python -m devtools.cluster up       # build, start, deploy; again: changes nothing
python -m devtools.cluster down     # stop and remove all of it
python -m devtools.cluster status   # exit 0 when the node runs
"""

from __future__ import annotations

import argparse
import sys
import time

from devtools.cluster import cluster
from devtools.cluster.node import Node, NodeError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.cluster", description=__doc__)
    parser.add_argument("action", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        if args.action == "up":
            info = cluster.up()
            print(info.describe())
            print(f"(up in {time.monotonic() - started:.0f} s)", file=sys.stderr)
        elif args.action == "down":
            cluster.down()
        else:
            running = Node().running()
            print("running" if running else "not running")
            return 0 if running else 1
    except (NodeError, RuntimeError) as error:
        print(f"cluster: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

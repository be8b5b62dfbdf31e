"""`make replay`: ask process-data to rebuild the read store from order-db's order log.

Replay is idempotent: stats-order-db counts each order id once, so a replay adds only what the
read store is missing. Without a running shop it says so in one line and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import requests

from cqrs_common.roles import PROCESS_DATA

DEFAULT_URL = f"http://127.0.0.1:{PROCESS_DATA.port}"


def fail(message: str) -> None:
    """One line on stderr and exit 1: what went wrong is the whole story, no traceback."""
    print(f"make replay: {message}", file=sys.stderr)
    sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="make replay", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url",
        default=os.environ.get("REPLAY_URL") or DEFAULT_URL,
        help=f"process-data's base URL (REPLAY_URL; default {DEFAULT_URL}, as make run starts it)",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for it")
    args = parser.parse_args(argv)
    url = args.url.rstrip("/")
    try:
        response = requests.post(f"{url}/replay", timeout=(5.0, args.timeout))
    except requests.ConnectionError:
        fail(f"nothing answers at {url}: start the shop with `make run`, or set REPLAY_URL")
    except requests.Timeout:
        fail(f"{url} did not answer within {args.timeout:.0f} s")
    except requests.RequestException as exc:
        fail(f"{url}: {exc}")
    if response.status_code != 200:
        fail(f"{url}/replay answered {response.status_code}: {response.text.strip()[:200]}")
    try:
        print(json.dumps(response.json()))
    except ValueError:
        fail(f"{url}/replay answered 200 but not with JSON: is that process-data?")


if __name__ == "__main__":
    main()

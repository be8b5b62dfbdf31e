"""`make replay`: ask process-data to rebuild the read store from order-db's order log."""

from __future__ import annotations

import argparse
import json

import requests

from cqrs_common.roles import PROCESS_DATA


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default=f"http://127.0.0.1:{PROCESS_DATA.port}")
    args = parser.parse_args(argv)
    response = requests.post(f"{args.url}/replay", timeout=600)
    response.raise_for_status()
    print(json.dumps(response.json()))


if __name__ == "__main__":
    main()

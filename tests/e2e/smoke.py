#!/usr/bin/env python3
"""End-to-end smoke check of a running shop, local (`make run`) or in a cluster.

    python tests/e2e/smoke.py [--base-url URL] [--host HOST] [--timeout SECONDS]

BASE_URL defaults to http://127.0.0.1:8080 (env BASE_URL); --host (env SMOKE_HOST) sets
the Host header, to go through an ingress: --base-url http://<ingress-ip>
--host cqrs-dispatcher.cqrs.<domain>. Places three orders (two through the API, one
through the legacy form), waits for the exact totals, and checks that bad input is
refused with problem+json and changes nothing. The cluster may already hold orders, so
totals are compared with those read before. Exit status 0 only if every check passed.
Needs only `requests`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import requests

Totals = dict[str, tuple[int, Decimal]]
PRODUCTS = ("apple", "pear")


class SmokeError(Exception):
    """A check failed."""


class Shop:
    """A client of the dispatcher's public API."""

    def __init__(self, base_url: str, host: str | None, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        if host:
            self.session.headers["Host"] = host
        self.request_timeout = timeout

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.request_timeout)
        kwargs.setdefault("allow_redirects", False)
        return self.session.request(method, self.base_url + path, **kwargs)

    def totals(self) -> Totals:
        response = self.request("GET", "/api/stats")
        expect(response.status_code == 200, f"GET /api/stats answered {response.status_code}")
        body = response.json()
        out = {}
        for product in PRODUCTS:
            row = body["products"][product]
            expect(isinstance(row["totalPrice"], str), "money in /api/stats is a decimal string")
            out[product] = (row["quantity"], Decimal(row["totalPrice"]))
        out["orders"] = (body["ordersCounted"], Decimal(0))
        return out


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise SmokeError(message)


def check(label: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Print what a step checked, and whether it passed."""

    def wrap(step: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            try:
                result = step(*args)
            except (SmokeError, requests.RequestException, KeyError, ValueError) as exc:
                print(f"FAIL {label}: {type(exc).__name__}: {exc}", flush=True)
                raise SmokeError(label) from exc
            print(f"ok   {label}", flush=True)
            return result

        return run

    return wrap


@check("dispatcher answers GET /healthz with 200")
def check_health(shop: Shop) -> None:
    status = shop.request("GET", "/healthz").status_code
    expect(status == 200, f"status {status}")


@check("bad input is refused with a problem+json 4xx naming the field")
def check_bad_input(shop: Shop) -> None:
    bad = [
        ({"product": "banana", "quantity": 1, "unitPrice": "1.00"}, "product"),
        ({"product": "apple", "quantity": 0, "unitPrice": "1.00"}, "quantity"),
        ({"product": "apple", "quantity": 1.5, "unitPrice": "1.00"}, "quantity"),
        ({"product": "apple", "quantity": 1, "unitPrice": "-1"}, "unitPrice"),
        ({"product": "apple", "quantity": 1, "unitPrice": "1.001"}, "unitPrice"),
    ]
    for body, field in bad:
        for path in ("/api/orders", "/order"):
            r = shop.request("POST", path, json=body, headers={"Accept": "application/json"})
            expect(400 <= r.status_code < 500, f"{path} {body}: status {r.status_code}")
            ctype = r.headers.get("Content-Type", "")
            expect(ctype.startswith("application/problem+json"), f"{path}: {ctype}")
            expect(field in r.text, f"{path} {body}: the problem does not name {field!r}")
    r = shop.request(
        "POST", "/api/orders", data="product=apple", headers={"Content-Type": "text/plain"}
    )
    expect(r.status_code == 415, f"text/plain body: status {r.status_code}, expected 415")


@check("orders accepted: API with Idempotency-Key (a retry returns the same orderId), legacy form")
def place_orders(shop: Shop) -> list[tuple[str, int, str]]:
    key = str(uuid.uuid4())
    first = shop.request(
        "POST",
        "/api/orders",
        json={"product": "apple", "quantity": 3, "unitPrice": "1.50"},
        headers={"Idempotency-Key": key},
    )
    expect(first.status_code == 202, f"POST /api/orders: {first.status_code} {first.text[:200]}")
    body = first.json()
    expect(body.get("status") == "accepted" and body.get("orderId"), f"body {body}")
    expect(bool(first.headers.get("Location")), "no Location header")
    retry = shop.request(
        "POST",
        "/api/orders",
        json={"product": "apple", "quantity": 3, "unitPrice": "1.50"},
        headers={"Idempotency-Key": key},
    )
    expect(retry.status_code == 202, f"retry: {retry.status_code}")
    expect(retry.json().get("orderId") == body["orderId"], "retry got another orderId")
    pear = shop.request(
        "POST",
        "/api/orders",
        json={"product": "pear", "quantity": 2, "unitPrice": 0.75},
        headers={"Idempotency-Key": str(uuid.uuid4())},
    )
    expect(pear.status_code == 202, f"pear: {pear.status_code} {pear.text[:200]}")
    legacy = shop.request(
        "POST",
        "/order",
        data={"product": "apple", "quantity": "1", "unitPrice": "2.25"},
        headers={"Accept": "application/json"},
    )
    expect(legacy.status_code == 202, f"POST /order (form): {legacy.status_code}")
    return [("apple", 3, "1.50"), ("pear", 2, "0.75"), ("apple", 1, "2.25")]


def expected_after(before: Totals, orders: list[tuple[str, int, str]]) -> Totals:
    after = dict(before)
    for product, quantity, price in orders:
        qty, total = after[product]
        after[product] = (qty + quantity, total + Decimal(price) * quantity)
    count, zero = after["orders"]
    after["orders"] = (count + len(orders), zero)
    return after


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default=os.environ.get("BASE_URL") or "http://127.0.0.1:8080")
    parser.add_argument("--host", default=os.environ.get("SMOKE_HOST") or None)
    parser.add_argument(
        "--timeout",
        type=float,
        default=float(os.environ.get("SMOKE_TIMEOUT", "120")),
        help="seconds to wait for the read side (cold starts in a cluster take a while)",
    )
    args = parser.parse_args(argv)
    shop = Shop(args.base_url, args.host, timeout=min(args.timeout, 60))
    print(f"smoke: {shop.base_url}" + (f" (Host: {args.host})" if args.host else ""))
    try:
        check_health(shop)
        before = check("read the totals before (GET /api/stats)")(shop.totals)()
        check_bad_input(shop)
        unchanged = check("bad input changed nothing")(
            lambda: expect(shop.totals() == before, "totals moved")
        )
        unchanged()
        orders = place_orders(shop)
        want = expected_after(before, orders)
        wait_for_totals(shop, want, args.timeout)
        check_legacy_totals(shop, want)
    except SmokeError:
        print("smoke: FAILED", flush=True)
        return 1
    print("smoke: all checks passed", flush=True)
    return 0


def wait_for_totals(shop: Shop, want: Totals, timeout: float) -> None:
    @check(f"exact totals in /api/stats within {timeout:g}s (before + the 3 new orders)")
    def run() -> None:
        deadline = time.monotonic() + timeout
        last: Totals | None = None
        while time.monotonic() < deadline:
            try:
                last = shop.totals()
            except (requests.RequestException, SmokeError):
                last = None  # a cold start may answer 503 for a moment
            if last == want:
                return
            time.sleep(0.5)
        raise SmokeError(f"wanted {want}, last read {last}")

    run()


def check_legacy_totals(shop: Shop, want: Totals) -> None:
    @check("GET /order/orders has the legacy shape and the same totals")
    def run() -> None:
        r = shop.request("GET", "/order/orders")
        expect(r.status_code == 200, f"status {r.status_code}")
        body = r.json()
        keys = {"quantityApple", "totalPriceApple", "quantityPear", "totalPricePear"}
        expect(set(body) == keys, f"keys {sorted(body)}")
        for key, value in body.items():
            number = isinstance(value, int | float) and not isinstance(value, bool)
            expect(number, f"{key} is not a JSON number: {value!r}")
        for product, name in (("apple", "Apple"), ("pear", "Pear")):
            qty, total = want[product]
            expect(body[f"quantity{name}"] == qty, f"quantity{name} {body[f'quantity{name}']}")
            expect(
                abs(Decimal(str(body[f"totalPrice{name}"])) - total) < Decimal("0.005"),
                f"totalPrice{name} {body[f'totalPrice{name}']} != {total}",
            )

    run()


if __name__ == "__main__":
    sys.exit(main())

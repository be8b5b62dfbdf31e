"""The shop's web page: the order form and the merchant's totals, in one self-contained page.

Works without JavaScript (a plain form post, answered by `form_response`); with JavaScript the
same page places orders through the JSON API and keeps the totals fresh by polling.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, redirect, render_template, request, url_for

from cqrs_common.client import UpstreamError
from cqrs_common.domain import (
    MAX_QUANTITY,
    MAX_UNIT_PRICE,
    PRODUCTS,
    ValidationError,
    parse_money,
    parse_order_id,
    parse_product,
    parse_quantity,
)

logger = logging.getLogger(__name__)

page = Blueprint(
    "page",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

FIELDS: tuple[str, ...] = ("product", "quantity", "unitPrice")
# The browser's copy of parse_money's rule: digits, then at most 2 decimal places that count
# (trailing zeros are fine, as the server takes "1.500"). The upper bound is checked in JS.
PRICE_PATTERN = r"[0-9]{1,16}(\.[0-9]{1,2}0{0,14})?"
# The page loads nothing from elsewhere and runs no inline script or style.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
STATS_POLL_MS = 2000


@dataclass(frozen=True)
class ProductRow:
    product: str
    quantity: int
    total_price: Decimal
    quantity_share: float  # bar length, 0..100, relative to the largest product
    price_share: float


@dataclass(frozen=True)
class StatsView:
    rows: tuple[ProductRow, ...]
    orders_counted: int
    updated_at: str | None
    pipeline: str | None = None  # how far behind the totals are, in words
    stuck: bool = False  # an event waits for an operator


def pipeline_sentence(pipeline: Mapping[str, Any] | None) -> str | None:
    """The read side's lag and the stuck events, for the merchant (shop.js says the same)."""
    if not pipeline:
        return None
    behind, stuck = int(pipeline.get("behind") or 0), int(pipeline.get("stuck") or 0)
    unlogged = int(pipeline.get("countedNotLogged") or 0)
    if unlogged:
        return (f"The totals count {format_quantity(unlogged)} order{'s' if unlogged != 1 else ''}"
                " the order log does not hold: the write store has lost orders.")  # fmt: skip
    if behind == 0:
        return "Up to date: every order placed is counted."
    words = f"{format_quantity(behind)} order{'s' if behind != 1 else ''} not counted yet"
    if stuck:
        words += f"; {format_quantity(stuck)} stuck, waiting for an operator"
    return words + "."


def _refusal(parse: Callable[[Any], Any], bad: Any) -> str:
    """The server's own message for a bad value, so the browser says exactly the same."""
    try:
        parse(bad)
    except ValidationError as exc:
        return next(iter(exc.errors.values()))
    raise AssertionError(f"{bad!r} was accepted")  # pragma: no cover - the rules changed


@cache
def field_messages() -> dict[str, dict[str, str]]:
    return {
        "product": {
            "missing": _refusal(parse_product, ""),
            "invalid": _refusal(parse_product, "?"),
        },
        "quantity": {"invalid": _refusal(parse_quantity, "x")},
        "unitPrice": {"invalid": _refusal(lambda v: parse_money(v, "unitPrice"), "x")},
    }


def sentence(message: str) -> str:
    """'must be ...' -> 'Must be ...': the server's reasons read as the rest of a sentence."""
    message = message.strip()
    if not message:
        return message
    message = message[0].upper() + message[1:]
    return message if message.endswith((".", "!", "?")) else message + "."


@cache
def _asset_version(filename: str) -> str:
    """A content hash for cache busting: a new release never runs with the old script."""
    path = Path(page.static_folder or "") / filename
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def asset_url(filename: str) -> str:
    return url_for("page.static", filename=filename, v=_asset_version(filename))


def _share(value: Decimal | int, largest: Decimal | int) -> float:
    if largest <= 0:
        return 0.0
    return round(float(Decimal(value) * 100 / Decimal(largest)), 2)


def _decimal(value: Any) -> Decimal:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return Decimal(0)
    return number if number.is_finite() else Decimal(0)


def stats_view(stats: Mapping[str, Any]) -> StatsView:
    """The /api/stats shape, turned into rows and bar lengths for the template."""
    products = stats.get("products") or {}
    raw = []
    for product in PRODUCTS:
        entry = products.get(product) or {}
        raw.append((product, int(entry.get("quantity") or 0), _decimal(entry.get("totalPrice"))))
    top_quantity = max(q for _, q, _ in raw)
    top_price = max(p for _, _, p in raw)
    rows = tuple(
        ProductRow(p, q, t, _share(q, top_quantity), _share(t, top_price)) for p, q, t in raw
    )
    pipeline = stats.get("pipeline")
    return StatsView(
        rows,
        int(stats.get("ordersCounted") or 0),
        stats.get("updatedAt"),
        pipeline_sentence(pipeline),
        bool(pipeline and pipeline.get("stuck")),
    )


def format_quantity(value: int) -> str:
    return f"{value:,}"


def format_money(value: Decimal | str) -> str:
    return f"{_decimal(value):,.2f}"


def age(timestamp: str | None, now: datetime | None = None) -> str:
    """How long ago, in words short enough for a status line."""
    if not timestamp:
        return "no orders yet"
    try:
        moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "unknown"
    seconds = int(((now or datetime.now(UTC)) - moment).total_seconds())
    if seconds < 5:
        return "just now"
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _dispatcher() -> Any:
    return current_app.extensions["dispatcher"]


def _load_stats() -> tuple[StatsView | None, str | None]:
    try:
        return stats_view(_dispatcher().stats()), None
    except UpstreamError as exc:
        logger.warning("page rendered without totals: %s", exc)
        return None, "The totals are unavailable right now. Orders can still be placed."


def _placed_order(order_id: str | None) -> dict[str, str] | None:
    if not order_id:
        return None
    try:
        order_id = parse_order_id(order_id)
    except ValidationError:
        return None
    try:
        status = _dispatcher().order_status(order_id).get("status", "pending")
    except UpstreamError as exc:
        logger.warning("order status unavailable: %s", exc)
        status = "unknown"
    return {"orderId": order_id, "status": status}


def _with_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"  # the totals are live
    return response


def render_page(
    values: Mapping[str, str] | None = None,
    errors: Mapping[str, str] | None = None,
    placed: str | None = None,
    status: int = 200,
) -> Response:
    # The order's status first, then the totals: the read store only grows, so totals read
    # after "counted" include the order. The other way round, a page could say "counted"
    # over totals without it and, being counted, never refresh them (without JavaScript).
    placed_order = _placed_order(placed)
    stats, stats_notice = _load_stats()
    errors = dict(errors or {})
    field_errors = {f: sentence(m) for f, m in errors.items() if f in FIELDS}
    # Anything not about one field ("body": the whole request) goes above the form.
    form_errors = [
        sentence(m if f == "body" else f"{f} {m}") for f, m in errors.items() if f not in FIELDS
    ]
    values = {f: str(v) for f, v in (values or {}).items() if f in FIELDS}
    root = request.script_root
    html = render_template(
        "order.html",
        products=PRODUCTS,
        values=values,
        field_errors=field_errors,
        form_errors=form_errors,
        stats=stats,
        stats_notice=stats_notice,
        placed=placed_order,
        max_quantity=MAX_QUANTITY,
        max_unit_price=MAX_UNIT_PRICE,
        price_pattern=PRICE_PATTERN,
        messages=field_messages(),
        sentence=sentence,
        format_quantity=format_quantity,
        format_money=format_money,
        age=age,
        asset_url=asset_url,
        idempotency_key=uuid.uuid4().hex,
        api={
            "orders": f"{root}/api/orders",
            "stats": f"{root}/api/stats",
            "pollMs": STATS_POLL_MS,
        },
    )
    return _with_headers(Response(html, status=status, mimetype="text/html"))


@page.get("/")
def index() -> Response:
    return redirect(url_for("page.order"), 302)


@page.get("/order")
def order() -> Response:
    return render_page(placed=request.args.get("placed"))


def form_response(
    values: Mapping[str, str],
    order_id: str | None,
    errors: Mapping[str, str] | None,
    *,
    status: int = 400,
) -> Response:
    """The answer to a browser's plain form post to POST /order.

    Placed: 303 back to the page, which confirms it (post/redirect/get, so a reload does not
    post again). Refused: the page again (400, or `status`, e.g. 503 when the command side is
    away), each reason next to its field, any other (key "body") above the form, values kept.
    """
    if order_id:
        return _with_headers(redirect(url_for("page.order", placed=order_id), 303))
    errors = errors or {"body": "the order was not placed"}
    return render_page(values=values, errors=errors, status=status)

"""The shop's domain: products, orders, exact money and the rules that check them.

Pure functions and frozen dataclasses only: no Flask, no storage, no HTTP.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

PRODUCTS: tuple[str, ...] = ("apple", "pear")
MAX_QUANTITY = 1_000_000
MAX_UNIT_PRICE = Decimal("1000000")
CENT = Decimal("0.01")
_ORDER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_DIGITS = re.compile(r"^[0-9]{1,16}$")
_MONEY = re.compile(r"^[0-9]{1,16}(\.[0-9]{1,16})?$")
# Order ids made from an Idempotency-Key live in their own UUID namespace.
IDEMPOTENCY_NAMESPACE = uuid.UUID("8f0d5a3e-6c1b-4d0e-9a57-3b1f2c4e5d60")
MAX_KEY_LENGTH = 255
# A customer reads the refusals of these fields on the page (and an API client in
# `invalid-params`), so their reasons are whole sentences naming the field in plain words.
_LABELS = {"unitPrice": "Unit price"}
CHOOSE_PRODUCT = "Choose a product: " + " or ".join(PRODUCTS) + "."


class ValidationError(ValueError):
    """One or more fields at fault; `errors` maps each field to why."""

    def __init__(self, field: str, message: str, *more: tuple[str, str]) -> None:
        self.errors: dict[str, str] = {field: message, **dict(more)}
        super().__init__("; ".join(f"{f}: {m}" for f, m in self.errors.items()))

    @property
    def field(self) -> str:
        return next(iter(self.errors))


class ConflictError(ValueError):
    """The request names something that exists with other contents: an order id (made from an
    Idempotency-Key) already placed with another product, quantity or price."""


def reason_sentence(field: str, reason: str) -> str:
    """One reason as a sentence that stands alone: a customer's field already has one; a
    terse reason ("must be ...") gets its field's name in front."""
    text = reason.strip()
    if not text[:1].isupper():
        text = f"{field[:1].upper()}{field[1:]} {text}"
    return text if text.endswith((".", "!", "?")) else text + "."


@dataclass(frozen=True)
class PlaceOrder:
    """A customer's command, validated."""

    product: str
    quantity: int
    unit_price: Decimal


@dataclass(frozen=True)
class Order:
    order_id: str
    product: str
    quantity: int
    unit_price: Decimal
    placed_at: str

    @property
    def amount(self) -> Decimal:
        return order_amount(self.quantity, self.unit_price)


@dataclass(frozen=True)
class StatsDelta:
    """What one order adds to the read side."""

    order_id: str
    product: str
    quantity: int
    unit_price: Decimal
    amount: Decimal


def order_amount(quantity: int, unit_price: Decimal) -> Decimal:
    return (unit_price * quantity).quantize(CENT)


def delta_for(order: Order) -> StatsDelta:
    return StatsDelta(order.order_id, order.product, order.quantity, order.unit_price, order.amount)


def now_iso() -> str:
    """UTC now in RFC 3339 with milliseconds, the form every timestamp here takes."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_product(value: Any) -> str:
    if not isinstance(value, str) or value not in PRODUCTS:  # missing or unknown alike
        raise ValidationError("product", CHOOSE_PRODUCT)
    return value


def parse_quantity(value: Any) -> int:
    message = f"Quantity must be a whole number from 1 to {MAX_QUANTITY:,}."
    if isinstance(value, bool):
        raise ValidationError("quantity", message)
    if isinstance(value, str):
        text = value.strip()
        if not _DIGITS.match(text):
            raise ValidationError("quantity", message)
        value = int(text)
    elif isinstance(value, (float, Decimal)):
        if not math.isfinite(value) or value != int(value):
            raise ValidationError("quantity", message)
        value = int(value)
    elif not isinstance(value, int):
        raise ValidationError("quantity", message)
    if not 1 <= value <= MAX_QUANTITY:
        raise ValidationError("quantity", message)
    return value


def parse_money(
    value: Any,
    field: str,
    *,
    max_places: int = 2,
    maximum: Decimal | None = MAX_UNIT_PRICE,
) -> Decimal:
    """Parse a non-negative decimal with at most `max_places` places, exactly.

    Strings and JSON numbers are accepted; JSON numbers should reach here as Decimal
    (parse JSON with `parse_float=Decimal`) so no binary float ever touches money.
    """
    label = _LABELS.get(field, field)
    limit = f"from 0 to {maximum:,}" if maximum is not None else "of 0 or more"
    example = ", such as 1.50" if max_places == 2 else ""
    message = f"{label} must be a number {limit} with at most {max_places} decimal places{example}."
    if isinstance(value, bool) or value is None:
        raise ValidationError(field, message)
    if isinstance(value, str):
        text = value.strip()
        if not _MONEY.match(text):
            raise ValidationError(field, message)
        number = Decimal(text)
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))  # the shortest text that round-trips, not the binary value
    elif isinstance(value, Decimal):
        number = value
    else:
        raise ValidationError(field, message)
    try:
        if not number.is_finite() or number < 0 or (maximum is not None and number > maximum):
            raise ValidationError(field, message)
        quantized = number.quantize(Decimal(1).scaleb(-max_places))
    except InvalidOperation:
        raise ValidationError(field, message) from None
    if quantized != number:
        raise ValidationError(field, message)
    return quantized.quantize(CENT) if max_places == 2 else quantized


def parse_order_id(value: Any) -> str:
    if not isinstance(value, str) or not _ORDER_ID.match(value):
        raise ValidationError("orderId", "must be 1 to 64 letters, digits or ._:- characters")
    return value


def order_id_for(idempotency_key: str | None) -> str:
    """The id of a new order, made once where the order enters the shop and passed on to every
    hop, so however often a hop retries, order-db stores it once. With an Idempotency-Key it is
    derived from the key, so a retried request gets the same id; without one it is new."""
    if idempotency_key is None:
        return str(uuid.uuid4())
    key = idempotency_key.strip()
    # Visible ASCII only: what an HTTP header carries intact through every proxy.
    if not key or len(key) > MAX_KEY_LENGTH or not (key.isascii() and key.isprintable()):
        raise ValidationError(
            "Idempotency-Key", f"must be 1 to {MAX_KEY_LENGTH} printable ASCII characters"
        )
    return str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, key))


def parse_timestamp(value: Any, field: str) -> str:
    if not isinstance(value, str) or len(value) > 40:
        raise ValidationError(field, "must be an RFC 3339 timestamp")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(field, "must be an RFC 3339 timestamp") from None
    if moment.tzinfo is None:
        raise ValidationError(field, "must carry a time zone")
    return value


def parse_place_order(payload: Any) -> PlaceOrder:
    """Validate a customer's order (form or JSON); every field at fault is reported."""
    if not isinstance(payload, dict):
        raise ValidationError("body", "must be a JSON object or a form")
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    for field, parse in (
        ("product", parse_product),
        ("quantity", parse_quantity),
        ("unitPrice", lambda v: parse_money(v, "unitPrice")),
    ):
        try:
            values[field] = parse(payload.get(field))
        except ValidationError as exc:
            errors.update(exc.errors)
    if errors:
        raise ValidationError(*next(iter(errors.items())), *list(errors.items())[1:])
    return PlaceOrder(values["product"], values["quantity"], values["unitPrice"])

"""The shop's page in a real browser, with and without JavaScript, against the live stack.

Every test compares the totals before and after (the stack is shared by the session) and waits
for the read side to settle first, so an earlier test's order still on its way cannot count.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Page, Request, Route, expect

from tests.browser.conftest import VIEWPORT, Watched

pytestmark = pytest.mark.slow
expect.set_options(timeout=20_000)

PRODUCTS = ("apple", "pear")
METRICS = ("quantity", "totalPrice")
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "page.png"


# ---- helpers -------------------------------------------------------------------------------


def api_stats(base_url: str) -> dict[str, Any]:
    response = requests.get(f"{base_url}/api/stats", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def settled_stats(base_url: str, quiet: float = 1.5, timeout: float = 60.0) -> dict[str, Any]:
    """The totals once they have stopped moving for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last, since = api_stats(base_url), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        current = api_stats(base_url)
        if current != last:
            last, since = current, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return current
    raise AssertionError(f"the totals kept changing for {timeout}s")


def plus(stats: dict[str, Any], product: str, quantity: int, unit_price: str) -> dict[str, Any]:
    """What the totals must be after one more order."""
    after = json.loads(json.dumps(stats))
    row = after["products"][product]
    row["quantity"] += quantity
    total = Decimal(row["totalPrice"]) + Decimal(unit_price) * quantity
    row["totalPrice"] = str(total.quantize(Decimal("0.01")))
    after["ordersCounted"] += 1
    return after


def quantity_text(value: int) -> str:
    return f"{value:,}"


def money_text(value: str) -> str:
    return f"{Decimal(value):,.2f}"


def as_sentence(reason: str) -> str:
    return reason[0].upper() + reason[1:] + ("" if reason.endswith(".") else ".")


def server_reason(base_url: str, field: str, **order: Any) -> str:
    """What the server says about a bad field, straight from the JSON API."""
    body = {"product": "apple", "quantity": 1, "unitPrice": "1.00", **order}
    response = requests.post(f"{base_url}/api/orders", json=body, timeout=10)
    assert response.status_code == 400, response.text
    reasons = {p["name"]: p["reason"] for p in response.json()["invalid-params"]}
    return reasons[field]


def cell(page: Page, product: str, metric: str):
    return page.locator(f'#totals tr[data-product="{product}"] td[data-metric="{metric}"]')


def bar(page: Page, product: str, metric: str):
    return page.locator(f'#chart rect[data-product="{product}"][data-metric="{metric}"]')


def bar_widths(stats: dict[str, Any]) -> dict[tuple[str, str], float]:
    """The bar lengths the chart must show: the largest product fills its track (100)."""
    widths = {}
    for metric in METRICS:
        values = {p: Decimal(str(stats["products"][p][metric])) for p in PRODUCTS}
        top = max(values.values())
        for product, value in values.items():
            widths[(product, metric)] = float(value * 100 / top) if top > 0 else 0.0
    return widths


def expect_totals(page: Page, stats: dict[str, Any]) -> None:
    """The page shows these totals, in the table, the chart and the counter."""
    for product in PRODUCTS:
        row = stats["products"][product]
        expect(cell(page, product, "quantity")).to_have_text(quantity_text(row["quantity"]))
        expect(cell(page, product, "totalPrice")).to_have_text(money_text(row["totalPrice"]))
    expect(page.locator("#orders-counted")).to_have_text(quantity_text(stats["ordersCounted"]))
    for (product, metric), width in bar_widths(stats).items():
        shown = float(bar(page, product, metric).get_attribute("width") or "nan")
        assert shown == pytest.approx(width, abs=0.01), (product, metric)


def posts_to(page: Page, path: str) -> list[Request]:
    """Record every POST the page sends to `path` from now on."""
    seen: list[Request] = []
    page.on(
        "request", lambda r: seen.append(r) if r.method == "POST" and r.url.endswith(path) else None
    )
    return seen


def fill_order(page: Page, product: str, quantity: str, unit_price: str) -> None:
    page.get_by_role("radio", name=product.capitalize()).check()
    page.get_by_label("Quantity").fill(quantity)
    page.get_by_label("Unit price").fill(unit_price)


def place_button(page: Page):
    return page.get_by_role("button", name="Place order")


# ---- the page as served --------------------------------------------------------------------


def test_root_redirects_to_the_self_contained_order_page(base_url: str) -> None:
    root = requests.get(f"{base_url}/", allow_redirects=False, timeout=10)
    assert root.status_code == 302
    assert root.headers["Location"].endswith("/order")

    page = requests.get(f"{base_url}/order", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp

    # Nothing from elsewhere: every reference is a path on this host, no fonts, no imports.
    refs = re.findall(r'(?:src|href|action)="([^"]*)"', page.text)
    assert refs and all(ref.startswith(("/", "#")) for ref in refs), refs
    assets = [ref for ref in refs if "/static/" in ref]
    assert len(assets) == 3, assets  # stylesheet, script, icon
    total = len(page.content)
    for asset in assets:
        response = requests.get(f"{base_url}{asset}", timeout=10)
        assert response.status_code == 200, asset
        body = response.content.replace(b'xmlns="http://www.w3.org/2000/svg"', b"")  # a name only
        assert b"http://" not in body and b"https://" not in body, asset
        assert b"@import" not in body and b"@font-face" not in body, asset
        total += len(response.content)
    assert total < 60_000, f"the page weighs {total} bytes"


# ---- with JavaScript -----------------------------------------------------------------------


def test_orders_placed_with_the_form_reach_the_totals_and_the_chart(
    js_page: Watched, base_url: str, artifacts: Path
) -> None:
    page = js_page.page
    before = settled_stats(base_url)
    page.goto(f"{base_url}/order")
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    expect_totals(page, before)
    posts = posts_to(page, "/api/orders")

    # An apple order, with the mouse.
    fill_order(page, "apple", "3", "1.50")
    expect(page.locator("#line-total-value")).to_have_text("4.50")
    place_button(page).click()
    first = page.locator("#recent-list li").first
    expect(first).to_contain_text("3 \N{MULTIPLICATION SIGN} apple at 1.50")
    expect(page.locator("#placed")).to_have_attribute("data-status", "counted")
    expect(page.locator("#placed")).to_contain_text("is counted in the totals")
    expect(first.locator(".badge")).to_have_text("counted")
    after_apple = plus(before, "apple", 3, "1.50")
    expect(page.locator("#orders-counted")).to_have_text(
        quantity_text(after_apple["ordersCounted"])
    )
    expect_totals(page, after_apple)
    assert api_stats(base_url)["products"] == after_apple["products"]

    # A pear order, with the keyboard only.
    page.get_by_label("Quantity").focus()
    page.keyboard.press("Shift+Tab")  # back to the product radios
    page.keyboard.press("ArrowRight")  # apple -> pear
    expect(page.get_by_role("radio", name="Pear")).to_be_checked()
    page.keyboard.press("Tab")
    page.keyboard.press("Control+A")
    page.keyboard.type("5")
    page.keyboard.press("Tab")
    page.keyboard.press("Control+A")
    page.keyboard.type("2")
    page.keyboard.press("Enter")
    expect(page.locator("#recent-list li").first).to_contain_text(
        "5 \N{MULTIPLICATION SIGN} pear at 2.00"
    )
    expect(page.locator("#placed")).to_have_attribute("data-status", "counted")
    after_pear = plus(after_apple, "pear", 5, "2")
    expect(page.locator("#orders-counted")).to_have_text(quantity_text(after_pear["ordersCounted"]))
    expect_totals(page, after_pear)
    expect(page.locator("#totals-live")).to_contain_text("Totals updated")

    # One POST per order, each with its own idempotency key; the store counted each once.
    assert len(posts) == 2
    keys = {r.headers.get("idempotency-key") for r in posts}
    assert len(keys) == 2 and None not in keys
    final = settled_stats(base_url)
    assert final["products"] == after_pear["products"]
    assert final["ordersCounted"] == after_pear["ordersCounted"]
    expect(page.locator("#updated-at")).to_have_attribute("datetime", final["updatedAt"])
    expect(page.locator("#updated-at")).to_have_text(re.compile(r"just now|\d+ s ago"))

    page.evaluate("document.activeElement.blur()")  # no focus ring or hover in the picture
    page.mouse.move(0, 0)
    page.screenshot(path=str(artifacts / "page.png"), full_page=True)
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":  # refresh the README's picture on purpose
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(artifacts / "page.png", DOCS_SCREENSHOT)
    assert js_page.errors == []


def test_the_totals_refresh_on_their_own(js_page: Watched, base_url: str) -> None:
    page = js_page.page
    before = settled_stats(base_url)
    page.goto(f"{base_url}/order")
    expect_totals(page, before)

    # Someone else orders (through the API, not this page): the page polls and shows it.
    response = requests.post(
        f"{base_url}/api/orders",
        json={"product": "apple", "quantity": 7, "unitPrice": "0.25"},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    after = plus(before, "apple", 7, "0.25")
    started = time.monotonic()
    expect(cell(page, "apple", "quantity")).to_have_text(
        quantity_text(after["products"]["apple"]["quantity"])
    )
    assert time.monotonic() - started < 10
    expect_totals(page, after)
    expect(page.locator("#totals-live")).to_contain_text("Totals updated")
    expect(page.locator("#recent-list li")).to_have_count(0)  # not this page's order
    assert js_page.errors == []


def test_the_totals_refresh_as_soon_as_the_order_is_counted(
    js_page: Watched, base_url: str
) -> None:
    page = js_page.page
    before = settled_stats(base_url)

    # No periodic poll in this page (10 min): only the order being counted can refresh it.
    def slow_poll(route: Route) -> None:
        html = route.fetch().text()
        route.fulfill(body=re.sub(r'data-poll-ms="\d+"', 'data-poll-ms="600000"', html),
                      content_type="text/html")  # fmt: skip

    page.route(re.compile(r"/order(\?.*)?$"), slow_poll)
    page.goto(f"{base_url}/order")
    expect(page.locator("#merchant")).to_have_attribute("data-poll-ms", "600000")
    expect_totals(page, before)

    fill_order(page, "pear", "4", "0.75")
    place_button(page).click()
    expect(page.locator("#placed")).to_have_attribute("data-status", "counted")
    expect_totals(page, plus(before, "pear", 4, "0.75"))
    assert js_page.errors == []


@pytest.mark.parametrize("quantity", ["0", "2.5", "1000001"])
def test_a_bad_quantity_is_refused_in_the_browser_with_the_servers_words(
    js_page: Watched, base_url: str, quantity: str
) -> None:
    page = js_page.page
    before = settled_stats(base_url)
    expected = as_sentence(server_reason(base_url, "quantity", quantity=quantity))
    page.goto(f"{base_url}/order")
    posts = posts_to(page, "/api/orders")

    fill_order(page, "pear", quantity, "1.00")
    place_button(page).click()
    expect(page.locator("#quantity-error")).to_have_text(expected)
    expect(page.get_by_label("Quantity")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Quantity")).to_be_focused()
    expect(page.locator("#form-error")).to_be_visible()
    expect(page.locator("#placed")).to_have_count(0)
    assert posts == []  # refused before anything was sent

    # Fixing the field clears its message.
    page.get_by_label("Quantity").fill("2")
    expect(page.locator("#quantity-error")).to_have_text("")
    expect(page.get_by_label("Quantity")).not_to_have_attribute("aria-invalid", "true")
    page.wait_for_timeout(2500)  # one more poll of the totals
    expect_totals(page, before)
    assert settled_stats(base_url) == before
    assert js_page.errors == []


def test_the_servers_refusal_is_shown_next_to_the_field(js_page: Watched, base_url: str) -> None:
    page = js_page.page
    before = settled_stats(base_url)
    page.goto(f"{base_url}/order")

    # A client whose checks let a bad quantity through: the server's answer lands on the field.
    def bad_quantity(route: Route) -> None:
        body = json.loads(route.request.post_data or "{}")
        route.continue_(post_data=json.dumps({**body, "quantity": 0}))

    page.route("**/api/orders", bad_quantity)
    fill_order(page, "apple", "4", "1.25")
    with page.expect_response(lambda r: r.url.endswith("/api/orders")) as answer:
        place_button(page).click()
    assert answer.value.status == 400
    reason = server_reason(base_url, "quantity", quantity=0)
    expect(page.locator("#quantity-error")).to_have_text(as_sentence(reason))
    expect(page.get_by_label("Quantity")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#form-error")).to_contain_text("The order was not placed")
    expect(page.locator("#placed")).to_have_count(0)
    page.wait_for_timeout(2500)
    expect_totals(page, before)
    assert settled_stats(base_url) == before
    # The 400 shows up as a failed resource load in the console; nothing else may.
    assert [e for e in js_page.errors if "400" not in e] == []


def test_the_page_stays_up_while_the_read_side_is_down(
    js_page: Watched, base_url: str, live_stack
) -> None:
    page = js_page.page
    settled_stats(base_url)
    live_stack.stop_role("query-order")
    try:
        served = requests.get(f"{base_url}/order", timeout=30)
        assert served.status_code == 200
        assert "The totals are unavailable right now" in served.text

        page.goto(f"{base_url}/order")
        expect(page.locator("#stats-notice")).to_be_visible()
        expect(page.locator("#live")).to_have_attribute("data-state", "offline")
        # The command side does not need the read side: the order is taken, and waits.
        fill_order(page, "pear", "1", "0.50")
        place_button(page).click()
        expect(page.locator("#placed")).to_contain_text("will reach the totals")
        expect(page.locator("#recent-list li .badge").first).to_have_text("pending")
    finally:
        live_stack.resume_role("query-order")
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    expect(page.locator("#stats-notice")).to_be_hidden()
    expect(page.locator("#placed")).to_have_attribute("data-status", "counted")
    expect(page.locator("#recent-list li .badge").first).to_have_text("counted")


def test_the_page_says_how_far_behind_the_totals_are(
    js_page: Watched, base_url: str, live_stack
) -> None:
    page = js_page.page
    settled_stats(base_url)
    page.goto(f"{base_url}/order")
    line = page.locator("#pipeline")
    expect(line).to_have_text("Up to date: every order placed is counted.")
    live_stack.stop_role("process-data")  # the projector away: orders wait in the outbox
    try:
        response = requests.post(
            f"{base_url}/api/orders",
            json={"product": "pear", "quantity": 1, "unitPrice": "0.40"},
            timeout=30,
        )
        assert response.status_code == 202, response.text
        # shop.js's words, on its own poll (no reload): the same as the server's
        expect(line).to_have_text("1 order not counted yet.")
        expect(line).not_to_have_attribute("data-stuck", "")
    finally:
        live_stack.resume_role("process-data")
    expect(line).to_have_text("Up to date: every order placed is counted.", timeout=30_000)
    assert js_page.errors == []


# ---- without JavaScript --------------------------------------------------------------------


def test_without_javascript_the_plain_form_places_the_order(
    plain_page: Watched, base_url: str, artifacts: Path, live_stack
) -> None:
    page = plain_page.page
    before = settled_stats(base_url)
    page.goto(f"{base_url}/order")
    expect_totals(page, before)
    expect(page.locator("#line-total")).to_be_hidden()

    # The projector is held back, so the order is seen waiting before it is counted.
    live_stack.stop_role("process-data")
    try:
        fill_order(page, "pear", "2", "3.25")
        with page.expect_response(lambda r: r.request.method == "POST") as answer:
            place_button(page).click()
        assert answer.value.status == 303
        page.wait_for_url(re.compile(r"/order\?placed="))
        expect(page.locator("#placed")).to_contain_text("Order placed")
        expect(page.locator("#placed")).to_contain_text("will reach the totals in a moment")
        expect(page.get_by_role("link", name="Check again")).to_be_visible()
        order_id = page.locator("#placed").get_attribute("data-order-id")
        assert order_id
        expect_totals(page, before)
    finally:
        live_stack.resume_role("process-data")

    # While the order is pending the page reloads itself (a <noscript> refresh), so it comes
    # to show the order counted, and the new totals, with no script at all.
    expect(page.locator("#placed")).to_contain_text("is counted in the totals")
    status = requests.get(f"{base_url}/api/orders/{order_id}", timeout=10).json()
    assert status == {"orderId": order_id, "status": "counted"}
    expect_totals(page, plus(before, "pear", 2, "3.25"))
    page.screenshot(path=str(artifacts / "page-without-javascript.png"), full_page=True)


def test_without_javascript_a_bad_quantity_is_refused_and_nothing_changes(
    plain_page: Watched, base_url: str
) -> None:
    page = plain_page.page
    before = settled_stats(base_url)
    page.goto(f"{base_url}/order")
    posts = posts_to(page, "/order")

    # The browser itself refuses it, from the field's min/max/step.
    fill_order(page, "pear", "0", "1.50")
    place_button(page).click()
    page.wait_for_timeout(300)
    assert posts == []
    assert page.locator("#quantity:invalid").count() == 1

    # A browser that does not check (an old one): the server refuses, next to the field.
    page.locator("#order-form").evaluate("form => { form.noValidate = true; }")
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        place_button(page).click()
    assert answer.value.status == 400
    reason = server_reason(base_url, "quantity", quantity=0)
    expect(page.locator("#quantity-error")).to_have_text(as_sentence(reason))
    expect(page.get_by_label("Quantity")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#form-error")).to_contain_text("The order was not placed")
    # What the user typed is kept.
    expect(page.get_by_label("Quantity")).to_have_value("0")
    expect(page.get_by_label("Unit price")).to_have_value("1.50")
    expect(page.get_by_role("radio", name="Pear")).to_be_checked()
    expect(page.locator("#placed")).to_have_count(0)
    expect_totals(page, before)
    page.wait_for_timeout(1500)
    assert settled_stats(base_url) == before


# ---- accessibility -------------------------------------------------------------------------

# WCAG contrast of each element's text against the background it is drawn on.
CONTRAST = """
(selectors) => {
  const rgb = (c) => c.match(/[\\d.]+/g).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length < 4 || c[3] > 0) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const out = {};
  for (const s of selectors) {
    const el = document.querySelector(s);
    const a = lum(rgb(getComputedStyle(el).color)), b = lum(background(el));
    out[s] = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  }
  return out;
}
"""
TEXT = [
    "h1", ".tagline", "legend", ".hint", "#quantity-error", "#form-error", "button.primary",
    ".totals thead th", ".totals td", ".tile dt", ".bar-value", ".footer a", "#live-text",
]  # fmt: skip


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_text_contrast_meets_wcag_aa_and_every_field_is_labelled(
    browser, base_url: str, scheme: str
) -> None:
    context = browser.new_context(viewport=VIEWPORT, color_scheme=scheme)
    try:
        page = context.new_page()
        page.goto(f"{base_url}/order")
        place_button(page).click()  # empty quantity: the error texts appear
        expect(page.locator("#quantity-error")).not_to_be_empty()
        ratios = page.evaluate(CONTRAST, TEXT)
        low = {s: round(r, 2) for s, r in ratios.items() if r < 4.5}
        assert low == {}, f"below 4.5:1 in {scheme}: {low}"

        for name in ("Quantity", "Unit price"):
            expect(page.get_by_label(name)).to_be_visible()
        for product in PRODUCTS:
            expect(page.get_by_role("radio", name=product.capitalize())).to_be_visible()
        expect(page.locator("#order-status")).to_have_attribute("role", "status")
        expect(page.locator("#totals-live")).to_have_attribute("aria-live", "polite")
        expect(page.locator("#form-error")).to_have_attribute("role", "alert")
    finally:
        context.close()

"""A real headless Chromium driven by Playwright, against the live stack."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Nothing of Chromium's own reaches out to the network: the tests only talk to loopback.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
VIEWPORT = {"width": 1200, "height": 900}


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        # Not a skip: a missing browser would silently drop the page's only real test.
        pytest.fail(
            f"Chromium is missing at {CHROMIUM}; install it with "
            "`apt-get update && apt-get install -y chromium` (the browser tests need it)",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def base_url(live_stack) -> str:
    return live_stack.url("dispatcher")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


class Watched:
    """A page plus what went wrong in it: script errors and console errors (CSP violations too)."""

    def __init__(self, page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on(
            "console",
            lambda msg: self.errors.append(f"console: {msg.text}") if msg.type == "error" else None,
        )


@pytest.fixture
def js_page(browser) -> Iterator[Watched]:
    context = browser.new_context(viewport=VIEWPORT)
    try:
        yield Watched(context.new_page())
    finally:
        context.close()


@pytest.fixture
def plain_page(browser) -> Iterator[Watched]:
    """A browser with JavaScript off: the page must work as a plain HTML form."""
    context = browser.new_context(viewport=VIEWPORT, java_script_enabled=False)
    try:
        yield Watched(context.new_page())
    finally:
        context.close()

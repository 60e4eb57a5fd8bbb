"""Real Chromium (Debian's package) driven by Playwright against the live stack."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.live import Stack

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "screenshots"

# Assertions wait as long as actions do (the page's default below). Playwright's own 5 s
# default failed in CI on a loaded 2-core machine: two uploads through the live stack to S3
# took longer than that, though nothing was wrong.
expect.set_options(timeout=15_000)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one test module. Playwright's sync API runs an event loop in this thread
    until it stops, so it must not outlive the module (other tests use asyncio.run)."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is required for browser tests (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    # While that loop runs, Django refuses ORM calls from this thread; the tests' own calls
    # are still synchronous and safe (Playwright's documented setting for Django tests).
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        yield from _launch(sync_playwright)
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def _launch(sync_playwright: Any) -> Iterator[Any]:
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, live_stack: Stack) -> Iterator[Any]:
    context = browser.new_context(base_url=live_stack.base_url, locale="en-US", viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


def screenshot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def htmx_settled(page: Any) -> None:
    """Wait until no htmx request is in flight and no swap is settling. htmx wires up swapped-in
    content only when it settles (20 ms after the swap): a choice made on an element in that
    window fires no request, as a person never could but a test can."""
    page.wait_for_function("() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling')")

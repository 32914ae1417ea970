"""Headless Chromium for the dashboard's browser tests: Debian's /usr/bin/chromium driven by
Playwright (never `playwright install`).  Without it a test is skipped, and under CI=true it
fails instead, so CI cannot pass without having run them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IN_CI = os.environ.get("CI", "").lower() == "true"
DESKTOP = {"width": 1280, "height": 900}


def _playwright_or_skip() -> Any:
    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        problem = f"Playwright is not installed ({error}): pip install playwright"
    if problem is None and not CHROMIUM.exists():
        problem = f"{CHROMIUM} is missing: apt-get install -y chromium"
    if problem is not None:
        if IN_CI:
            pytest.fail(f"{problem}; under CI=true the browser test must run", pytrace=False)
        pytest.skip(problem)
    return sync_playwright


@contextmanager
def chromium_page(viewport: dict[str, int] = DESKTOP, **context_options: Any) -> Iterator[Page]:
    """A page in a fresh browser context (its own cookies) of a headless Chromium, closed after.
    ``context_options`` go to ``new_context`` (``is_mobile``, ``device_scale_factor``...)."""
    sync_playwright = _playwright_or_skip()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_context(viewport=viewport, **context_options).new_page()
            page.set_default_timeout(15_000)
            yield page
        finally:
            browser.close()

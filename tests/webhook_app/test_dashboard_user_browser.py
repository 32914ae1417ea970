""" "Did Bob's phone ring?" in headless Chromium (Debian's /usr/bin/chromium through Playwright,
as test_dashboard_browser.py): log in, type ``bob`` in the header's search box, and the ring,
each of bob's devices and each outcome are on the page reached, at desktop width and at a
phone's 390 px, where no page scrolls sideways."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from werkzeug.serving import make_server

from tests.ops_data import ADMIN_TOKEN, API_KEY, SECRET, ops_app
from tests.webhook_app.chromium import chromium_page
from tests.worker.ops.test_user_activity import OTHER_APP, seed_bob
from worker.foundation.settings import load_settings
from worker.runtime.celery_app import create_celery
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head

pytestmark = pytest.mark.timeout(120)

PHONE_WIDTH = 390
# [the page's width, the window's]: a phone's browser widens its layout viewport to content that
# overflows it, so both are compared with the phone's width, not only with each other.
WIDTHS = "[document.scrollingElement.scrollWidth, window.innerWidth]"


@pytest.fixture
def site(sqlite_url, monkeypatch) -> Iterator[tuple[str, dict[str, int]]]:
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    settings = load_settings(
        database_url=sqlite_url,
        apps=[
            {"api_key": API_KEY, "api_secrets": [SECRET]},
            {"api_key": OTHER_APP, "api_secrets": [SECRET]},
        ],
        push_provider="console",
    )
    upgrade_to_head(sqlite_url)
    db = Database(sqlite_url)
    ids = seed_bob(db)
    server = make_server(
        "127.0.0.1", 0, ops_app(settings, db, create_celery(settings)), threaded=True
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", ids
    finally:
        server.shutdown()
        thread.join(10)
        db.dispose()


def log_in_and_search_bob(page, base: str) -> None:
    page.goto(f"{base}/dashboard/")
    page.fill("input[name=token]", ADMIN_TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/dashboard/")
    page.fill("header input[name=q]", "bob")
    page.click("header form.search button")  # click 1
    page.wait_for_url(f"{base}/dashboard/users/bob")


def assert_bobs_answer(page, ids: dict[str, int]) -> None:
    """The ring, each of bob's devices and each outcome, on the user page."""
    devices = page.locator("#devices tr.device")
    assert devices.count() == 3  # two in this app, one in the other
    assert "apns voip b0b0b0…b0b0" in page.inner_text("#devices")
    ring = page.locator(f"#activity tr[data-event-id='{ids['rung']}']")
    text = ring.inner_text()
    assert "call.ring" in text and "default:c1" in text
    pushes = ring.locator(".push")
    assert pushes.count() == 2
    assert "sent" in pushes.nth(0).inner_text() and "42 ms" in pushes.nth(0).inner_text()
    failed = pushes.nth(1).inner_text()
    assert "failed" in failed and "INTERNAL" in failed and "250 ms" in failed
    fanout = page.locator(f"#activity tr[data-event-id='{ids['fanout']}']").inner_text()
    assert "no push: " in fanout


def test_bob_in_three_clicks_at_desktop_width(site):
    base, ids = site
    with chromium_page() as page:
        log_in_and_search_bob(page, base)
        assert_bobs_answer(page, ids)

        # The call's trace from the ring's row (click 2), with bob's pushes on it.
        ring = page.locator(f"#activity tr[data-event-id='{ids['rung']}']")
        ring.locator("a:text-is('default:c1')").click()
        page.wait_for_url(f"{base}/dashboard/calls/default:c1?app={API_KEY}")
        trace = page.inner_text("#trace")
        assert trace.count("push to bob") == 2 and "INTERNAL" in trace

        # A call id and an event id in the same box go to their pages (in this page's app).
        page.fill("header input[name=q]", "default:c2")
        page.press("header input[name=q]", "Enter")
        page.wait_for_url(f"{base}/dashboard/calls/default:c2?app={API_KEY}")
        page.fill("header input[name=q]", str(ids["calling"]))
        page.press("header input[name=q]", "Enter")
        page.wait_for_url(f"{base}/dashboard/events/{ids['calling']}")


def test_bob_at_phone_width_without_sideways_scrolling(site):
    base, ids = site
    with chromium_page(
        {"width": PHONE_WIDTH, "height": 844}, device_scale_factor=3, is_mobile=True
    ) as page:
        log_in_and_search_bob(page, base)
        assert_bobs_answer(page, ids)
        assert page.evaluate(WIDTHS) == [PHONE_WIDTH, PHONE_WIDTH], "the user page is too wide"

        pages = {
            "home": f"{base}/dashboard/",
            "event": f"{base}/dashboard/events/{ids['rung']}",
            "call": f"{base}/dashboard/calls/default:c1?app={API_KEY}",
            "user in every app": f"{base}/dashboard/users/bob",
            "not found": f"{base}/dashboard/events/999999",
        }
        for name, url in pages.items():
            page.goto(url)
            widths = page.evaluate(WIDTHS)
            assert widths == [PHONE_WIDTH, PHONE_WIDTH], f"the {name} page is too wide: {widths}"
            # The search box is on every page, and fits.
            box = page.locator("header input[name=q]").bounding_box()
            assert box is not None and box["x"] + box["width"] <= PHONE_WIDTH

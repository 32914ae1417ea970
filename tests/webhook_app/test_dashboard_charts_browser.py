"""The home page's charts in headless Chromium (Debian's /usr/bin/chromium through Playwright,
as test_dashboard_browser.py): log in, and the three charts (pushes by result, ring latency,
queue depth), each over the last hour and the last day, are drawn from the stored rows, with
no Content-Security-Policy violation in the console, for one app when the page is filtered,
and at a phone's 390 px without sideways scrolling."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from werkzeug.serving import make_server

from tests.ops_data import ADMIN_TOKEN, API_KEY, SECRET, Seeder, now, ops_app, ring_body
from tests.webhook_app.chromium import chromium_page
from tests.webhook_app.test_dashboard_user_browser import PHONE_WIDTH, WIDTHS
from worker.foundation.settings import load_settings
from worker.runtime.celery_app import create_celery
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head

pytestmark = pytest.mark.timeout(120)

OTHER_APP = "other-app-key"
CHARTS = ("pushes", "latency", "queue")


@pytest.fixture
def site(sqlite_url, monkeypatch) -> Iterator[str]:
    """Two apps' rings over the last hour: sent, failed and skipped pushes, provider and phone
    latencies, and an event still waiting."""
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
    seed = Seeder(db)
    bob = seed.device("bob", "apns", "b0b0" * 16, voip=True)
    carol = seed.device("carol", "fcm", "carol-fcm-" + "c" * 40)
    dana = seed.device("dana", "fcm", "dana-fcm-" + "d" * 40, api_key=OTHER_APP)
    for minutes in (50, 30, 10):
        at = now() - timedelta(minutes=minutes)
        ring = seed.event(
            ring_body(f"default:m{minutes}", "alice", ["bob", "carol"]), received_at=at
        )
        seed.delivery(ring, bob, "sent", user_id="bob", created_at=at, latency_ms=45.0)
        seed.delivery(
            ring, carol, "failed", user_id="carol", platform="fcm", kind="data", created_at=at
        )
        seed.skipped_recipient(ring, "erin", "call pushes muted")
    other = seed.event(
        ring_body("default:other", "dana", ["dana"]),
        received_at=now() - timedelta(minutes=20),
        api_key=OTHER_APP,
    )
    seed.delivery(other, dana, "sent", user_id="dana", platform="fcm", kind="data")
    seed.event(
        ring_body("default:waiting", "alice", ["bob"]),
        status="received",
        received_at=now() - timedelta(minutes=5),
    )
    server = make_server(
        "127.0.0.1", 0, ops_app(settings, db, create_celery(settings)), threaded=True
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
        db.dispose()


def test_home_page_charts_in_chromium_with_no_csp_violation(site, tmp_path):
    base = site
    with chromium_page() as page:
        console: list[str] = []
        # Chromium asks for /favicon.ico, which the app does not serve: its 404 is no fault.
        page.on(
            "console",
            lambda message: (
                None
                if message.location.get("url", "").endswith("/favicon.ico")
                else console.append(f"{message.type}: {message.text}")
            ),
        )
        page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))

        page.goto(f"{base}/dashboard/")
        page.fill("input[name=token]", ADMIN_TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/dashboard/")

        # Three charts, each over the last hour and the last day, each an SVG with an
        # accessible name, drawn from the rows of both apps.
        for chart in CHARTS:
            for window in ("hour", "day"):
                figure = page.locator(f"#chart-{chart}-{window}")
                svg = figure.locator("svg[role=img]")
                assert svg.count() == 1 and svg.is_visible()
                assert svg.get_attribute("aria-labelledby") == (
                    f"{chart}-{window}-title {chart}-{window}-desc"
                )
                assert svg.bounding_box()["height"] > 100
        hour = page.locator("#chart-pushes-hour")
        # 3 rings x (sent, failed, skipped) + the other app's sent push.
        assert hour.get_attribute("data-total") == "10"
        assert page.locator("#chart-pushes-hour svg rect title").count() >= 4
        legend = page.locator("#chart-pushes-hour svg g.legend").text_content()
        assert "sent 4" in legend and "failed 3" in legend and "skipped 3" in legend
        assert page.locator("#chart-latency-hour").get_attribute("data-rings") == "4"
        # Rings minutes apart: a dot each (with its hover target), no line between them.
        p50 = page.locator("#chart-latency-hour svg g[data-series='to provider p50'] circle")
        assert p50.count() == 2 * 4
        assert page.locator("#chart-queue-hour").get_attribute("data-now") == "1"
        assert "1 event waiting now" in page.locator("#queue-hour-desc").text_content()
        # The text fallback: the numbers in a table, behind a <details>.
        page.click("#chart-pushes-hour summary")
        table = page.locator("#chart-pushes-hour table")
        columns = table.locator("thead th").all_text_contents()
        assert columns == ["UTC", "sent", "failed", "skipped"]
        assert table.locator("tbody tr").count() >= 3  # the minutes with pushes
        assert "Derived from the stored timestamps" in page.inner_text("#charts")
        page.screenshot(path=str(tmp_path / "charts.png"), full_page=True)

        # One app: the charts follow the page's app filter.
        page.select_option("select[name=app]", OTHER_APP)
        page.click("form.filters button")
        page.wait_for_url(f"**app={OTHER_APP}**")
        assert page.locator("#chart-pushes-hour").get_attribute("data-total") == "1"
        assert page.locator("#chart-latency-hour").get_attribute("data-rings") == "1"
        assert page.locator("#chart-queue-hour").get_attribute("data-now") == "0"

        # A phone: the charts shrink to the column; nothing scrolls sideways.
        page.set_viewport_size({"width": PHONE_WIDTH, "height": 844})
        page.goto(f"{base}/dashboard/")
        scroll_width, inner_width = page.evaluate(WIDTHS)
        assert scroll_width <= inner_width == PHONE_WIDTH
        for chart in CHARTS:
            box = page.locator(f"#chart-{chart}-day svg").bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE_WIDTH
        page.screenshot(path=str(tmp_path / "charts-phone.png"), full_page=True)

    # No script runs and no inline style is refused: the console stayed quiet.
    assert not [line for line in console if "Content Security Policy" in line], console
    assert not [line for line in console if line.startswith(("error", "pageerror"))], console
    print(f"\ncharts screenshots: {tmp_path}/charts.png and charts-phone.png")

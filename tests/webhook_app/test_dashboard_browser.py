"""The ops dashboard end to end in headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright): the real app served over real HTTP, a real Celery worker (threads, in-process
broker) behind it.  Log in, filter, open an event, dry-run and confirm a replay, watch it get
delivered; screenshots go to the test's tmp directory (the paths are printed)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select
from werkzeug.serving import make_server

from tests.ops_data import (
    ADMIN_TOKEN,
    API_KEY,
    SECRET,
    Seeder,
    notification_body,
    now,
    ops_app,
    ring_body,
)
from tests.webhook_app.chromium import chromium_page
from worker.foundation.settings import load_settings
from worker.runtime.celery_app import create_celery
from worker.runtime.inprocess_worker import inprocess_worker
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head
from worker.storage.models import Delivery, WebhookEvent

pytestmark = pytest.mark.timeout(120)

BOB_FCM = "bob-fcm-" + "b" * 40
CAROL_FCM = "carol-fcm-" + "c" * 40


@pytest.fixture
def site(sqlite_url, monkeypatch) -> Iterator[tuple[str, Database, dict[str, int]]]:
    """The app on 127.0.0.1:<port> with a worker; SQLite and the console push provider."""
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    settings = load_settings(
        database_url=sqlite_url,
        apps=[{"api_key": API_KEY, "api_secrets": [SECRET]}],
        push_provider="console",
    )
    upgrade_to_head(sqlite_url)
    db = Database(sqlite_url)
    seed = Seeder(db)
    bob, carol = seed.device("bob", "fcm", BOB_FCM), seed.device("carol", "fcm", CAROL_FCM)
    failed = seed.event(
        notification_body("default:standup", "alice", ["bob", "carol"]),
        status="failed",
        reason="1 failed, 1 sent",
        received_at=now() - timedelta(minutes=20),
    )
    seed.chunk(failed, 0, [("bob", "Bob"), ("carol", "Carol")])
    seed.delivery(
        failed,
        bob,
        "failed",
        user_id="bob",
        platform="fcm",
        kind="data",
        token_hint="bob-fc…bbbb",
        reason="retries exhausted",
        status_code=500,
    )
    seed.delivery(
        failed,
        carol,
        "sent",
        user_id="carol",
        platform="fcm",
        kind="data",
        token_hint="carol-…cccc",
    )
    rung = seed.event(
        ring_body("default:call1", "alice", ["carol"]), received_at=now() - timedelta(minutes=10)
    )
    seed.delivery(
        rung, carol, "sent", user_id="carol", platform="fcm", kind="data", token_hint="carol-…cccc"
    )
    celery = create_celery(settings)
    purge_queues(celery)
    server = make_server("127.0.0.1", 0, ops_app(settings, db, celery), threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        with inprocess_worker(celery, concurrency=2):
            yield f"http://127.0.0.1:{server.server_port}", db, {"failed": failed, "rung": rung}
    finally:
        server.shutdown()
        thread.join(10)
        db.dispose()


def purge_queues(celery) -> None:
    """kombu's in-memory transport keeps its queues per process: drop what earlier tests left
    (tasks for their event ids, which are ids in this database too)."""
    with celery.connection_for_write() as connection:
        for queue in ("ring", "bulk"):
            connection.default_channel.queue_declare(queue)
            connection.default_channel.queue_purge(queue)


def event_state(db: Database, event_id: int) -> tuple[str, int, list[str]]:
    with db.transaction() as session:
        row = session.get(WebhookEvent, event_id)
        statuses = sorted(
            session.scalars(select(Delivery.status).where(Delivery.event_id == event_id))
        )
        return row.status, row.replays, statuses


def test_dashboard_login_filter_detail_and_replay(site, tmp_path):
    base, db, ids = site
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with chromium_page() as page:
        context = page.context

        # Not logged in: the login form; a wrong token is refused.
        page.goto(f"{base}/dashboard/?status=failed")
        assert page.url.startswith(f"{base}/dashboard/login")
        page.fill("input[name=token]", "not-the-token")
        page.click("button[type=submit]")
        assert page.get_by_role("alert").inner_text() == "That is not the admin token."

        # Logged in: back where we were going, with an HttpOnly, SameSite=Strict cookie that
        # does not hold the token.
        page.fill("input[name=token]", ADMIN_TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/dashboard/?status=failed")
        (cookie,) = context.cookies()
        assert cookie["name"] == "callpush_dashboard"
        assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
        assert ADMIN_TOKEN not in cookie["value"]

        # The last hour's pushes by result, and the failed events only.
        assert page.inner_text("#push-counts [data-status=sent] b") == "2"
        assert page.inner_text("#push-counts [data-status=failed] b") == "1"
        rows = page.locator("#events tbody tr")
        assert rows.count() == 1 and "default:standup" in rows.first.inner_text()

        # Filters: every status, then by call.
        page.select_option("select[name=status]", "")
        page.fill("input[name=call]", "default:call1")
        page.click("form.filters button")
        page.wait_for_url("**call=default%3Acall1**")
        assert page.locator("#events tbody tr").count() == 1
        assert "call.ring" in page.inner_text("#events tbody")
        page.select_option("select[name=status]", "")
        page.fill("input[name=call]", "")
        page.click("form.filters button")
        assert page.locator("#events tbody tr").count() == 2
        page.screenshot(path=str(shots / "dashboard-events.png"), full_page=True)

        # An event's detail: its deliveries, redacted.
        page.click(f"#events a:text-is('{ids['failed']}')")
        page.wait_for_url(f"{base}/dashboard/events/{ids['failed']}")
        deliveries = page.inner_text("#deliveries")
        assert "bob-fc…bbbb" in deliveries and "retries exhausted" in deliveries
        assert BOB_FCM not in page.content() and CAROL_FCM not in page.content()

        # Replay: the dry run first, which changes nothing...
        page.click("text=Replay…")
        page.wait_for_url(f"{base}/dashboard/replay")
        assert "Dry run: nothing has changed yet. 1 device(s) would be re-sent" in (
            page.inner_text("main")
        )
        assert "bob · fcm bob-fc…bbbb" in page.inner_text("#plan")
        assert event_state(db, ids["failed"]) == ("failed", 0, ["failed", "sent"])
        page.screenshot(path=str(shots / "dashboard-replay-dry-run.png"), full_page=True)

        # ...then the confirmed replay, delivered by the worker.
        page.click("text=Confirm replay")
        page.wait_for_url(f"**/dashboard/events/{ids['failed']}?replayed=1**")
        assert "Replay queued" in page.inner_text("[role=status]")
        deadline = 50
        while event_state(db, ids["failed"])[0] != "processed" and deadline:
            page.wait_for_timeout(200)
            deadline -= 1
        assert event_state(db, ids["failed"]) == ("processed", 1, ["sent", "sent"])
        page.reload()
        assert page.locator("#deliveries .s-failed").count() == 0
        assert page.locator("#deliveries .s-sent").count() == 2
        screenshot = tmp_path / "dashboard.png"
        page.screenshot(path=str(screenshot), full_page=True)

        # The call's timeline, from the event page.
        page.click("dd a:text-is('default:standup')")
        page.wait_for_url(f"{base}/dashboard/calls/default:standup")
        trace = page.inner_text("#trace")
        assert "webhook received" in trace and "recipients: 2 device(s) of 2 user(s)" in trace
        assert trace.count("push to ") == 2
        assert re.search(r"\t2\d min$", trace, re.M)  # the replayed push: from the webhook
        page.screenshot(path=str(shots / "dashboard-trace.png"), full_page=True)

        # A form posted without its CSRF token is refused (cookie or not).
        forged = page.request.post(
            f"{base}/dashboard/replay", form={"event_id": str(ids["failed"]), "confirm": "1"}
        )
        assert forged.status == 403
        assert event_state(db, ids["failed"])[1] == 1

        # Logging out ends the session.
        page.click("header form.logout button")
        page.wait_for_url(f"{base}/dashboard/login")
        page.goto(f"{base}/dashboard/")
        assert page.url.startswith(f"{base}/dashboard/login")
    assert screenshot.stat().st_size > 10_000
    print(f"\ndashboard screenshots: {screenshot} and {shots}/")

"""Screenshots of the dashboard's home page (its charts), user page and a call trace for the
README, taken in headless Chromium (Debian's /usr/bin/chromium through Playwright) from a
throw-away SQLite world.

    python -m bench.dashboard_screenshots [--out docs/screenshots]

Not part of the test suite: the pictures are documentation, regenerated when the pages change.
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import update
from werkzeug.serving import make_server

from tests.ops_data import ADMIN_TOKEN, API_KEY, SECRET, Seeder, notification_body, ops_app
from tests.ops_data import ring_body as ring
from worker.foundation.settings import load_settings
from worker.runtime.celery_app import create_celery
from worker.storage import preferences
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head
from worker.storage.models import Delivery

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]


def seed(db: Database) -> None:
    """Bob's afternoon: rung twice by alice (once his Android phone's FCM answer was a 500),
    a missed call, a team call's notification; an old iPad token Apple no longer takes."""
    s = Seeder(db)
    now = datetime.now(UTC)
    iphone = s.device("bob", "apns", "b0b0" * 16, voip=True)
    pixel = s.device("bob", "fcm", "bob-pixel-" + "x" * 40, push_provider_name="android-prod")
    s.device(
        "bob",
        "apns",
        "1bad" * 16,
        voip=True,
        disabled_at=now - timedelta(days=9),
        disabled_reason="Unregistered",
    )
    carol = s.device("carol", "fcm", "carol-fcm-" + "y" * 40)

    def pushes(event: int, at: datetime, fcm_status: str = "sent", **fcm: object) -> None:
        s.delivery(
            event,
            iphone,
            "sent",
            user_id="bob",
            token_hint="b0b0b0…b0b0",
            created_at=at,
            latency_ms=38.0,
        )
        s.delivery(
            event,
            pixel,
            fcm_status,
            user_id="bob",
            platform="fcm",
            kind="data",
            token_hint="bob-pi…xxxx",
            created_at=at,
            **fcm,  # type: ignore[arg-type]
        )

    t = now - timedelta(hours=3)
    first = s.event(ring("default:standup", "alice", ["bob", "carol"]), received_at=t)
    pushes(first, t, latency_ms=61.0)
    s.delivery(
        first,
        carol,
        "sent",
        user_id="carol",
        platform="fcm",
        kind="data",
        token_hint="carol-…yyyy",
        created_at=t,
        latency_ms=55.0,
    )
    t = now - timedelta(hours=2)
    second = s.event(ring("default:1on1", "alice", ["bob"]), received_at=t)
    pushes(second, t, "failed", reason="INTERNAL", status_code=500, latency_ms=2_410.0)
    missed = s.event(
        {**ring("default:1on1", "alice", ["bob"]), "type": "call.missed"},
        received_at=t + timedelta(seconds=31),
    )
    pushes(missed, t + timedelta(seconds=31), latency_ms=52.0)
    t = now - timedelta(minutes=40)
    team = s.event(notification_body("default:all-hands", "dana", ["bob", "carol"]), received_at=t)
    pushes(team, t, latency_ms=74.0)
    with db.transaction() as session:
        preferences.set_preference(session, API_KEY, "carol", True, now + timedelta(hours=1))


def seed_traffic(db: Database, rings: int = 1500) -> None:
    """A day of other users' rings for the home page's charts: busier in the afternoon (UTC),
    an FCM outage five hours ago (failures, slow answers) while the workers fell behind (a
    backlog that drained when they caught up), a slow patch twenty minutes ago, receipts from
    most phones, and a few events still waiting now.  Random with a fixed seed, so the pictures
    are repeatable in shape."""
    s = Seeder(db)
    rng = random.Random(14)
    now = datetime.now(UTC)
    apple = s.device("user-a", "apns", "a1a1" * 16, voip=True)
    android = s.device("user-b", "fcm", "user-b-fcm-" + "z" * 40)
    outage = (now - timedelta(hours=5, minutes=20), now - timedelta(hours=4, minutes=40))
    slow = (now - timedelta(minutes=25), now - timedelta(minutes=15))
    made = 0
    while made < rings:
        at = now - timedelta(minutes=rng.uniform(0, 24 * 60))
        # Twice as many calls at 15:00 UTC as at 03:00.
        if rng.random() > 0.5 + 0.5 * math.cos((at.hour + at.minute / 60 - 15) / 24 * math.tau):
            continue
        made += 1
        in_outage = outage[0] < at < outage[1]
        waiting = now - at < timedelta(minutes=3) and made % 4 == 0
        if in_outage:  # the workers caught up at the outage's end
            done = outage[1] + timedelta(seconds=rng.uniform(5, 120))
        elif slow[0] < at < slow[1]:
            done = at + timedelta(seconds=rng.uniform(20, 240))
        else:
            done = at + timedelta(milliseconds=rng.uniform(40, 400))
        event = s.event(
            ring(f"default:t{made}", "user-c", ["user-a", "user-b", "user-d"]),
            status="received" if waiting else "processed",
            received_at=at,
            processed_at=None if waiting else done,
        )
        if waiting:
            continue
        latency = (done - at).total_seconds() * 1000 + rng.lognormvariate(3.7, 0.4)
        fcm_status = "failed" if in_outage and rng.random() < 0.6 else "sent"
        if not in_outage and rng.random() < 0.03:
            fcm_status = rng.choice(["token_invalid", "expired", "unconfirmed"])
        for device, status, platform in ((apple, "sent", "apns"), (android, fcm_status, "fcm")):
            delivery = s.delivery(
                event,
                device,
                status,
                user_id=f"user-{platform}",
                platform=platform,
                kind="voip" if platform == "apns" else "data",
                created_at=at,
                latency_ms=latency,
            )
            if status == "sent" and rng.random() < 0.8:
                with db.transaction() as session:
                    row = session.get(Delivery, delivery)
                    assert row is not None
                    row.phone_latency_ms = latency + rng.lognormvariate(5.8, 0.5)  # ~330 ms on
                    row.phone_received_at = at + timedelta(milliseconds=row.phone_latency_ms)
        if made % 11 == 0:
            s.skipped_recipient(event, "user-d", "call pushes muted")
            with db.transaction() as session:  # recorded now: put it at the ring's time
                session.execute(
                    update(Delivery)
                    .where(Delivery.event_id == event, Delivery.user_id == "user-d")
                    .values(created_at=at, claimed_at=at, finished_at=at)
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/screens.db"
        settings = load_settings(
            database_url=url, apps=[{"api_key": API_KEY, "api_secrets": [SECRET]}]
        )
        upgrade_to_head(url)
        db = Database(url)
        seed(db)
        seed_traffic(db)
        server = make_server("127.0.0.1", 0, ops_app(settings, db, create_celery(settings)))
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        base = f"http://127.0.0.1:{server.server_port}/dashboard"
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                for name, viewport in (("", (1280, 800)), ("-phone", (390, 844))):
                    context = browser.new_context(
                        viewport={"width": viewport[0], "height": viewport[1]},
                        device_scale_factor=2 if name else 1,
                    )
                    page = context.new_page()
                    page.goto(f"{base}/login")
                    page.fill("input[name=token]", ADMIN_TOKEN)
                    page.click("button[type=submit]")
                    page.wait_for_url(f"{base}/")
                    # The home page down to its charts (the events list below them is long).
                    box = page.locator("#charts").bounding_box()
                    assert box is not None
                    height = box["y"] + box["height"] + 16
                    shot = args.out / f"dashboard-home{name}.png"
                    page.screenshot(
                        path=str(shot),
                        full_page=True,
                        clip={"x": 0, "y": 0, "width": viewport[0], "height": height},
                    )
                    print(shot)
                    page.fill("header input[name=q]", "bob")
                    page.click("header form.search button")
                    page.wait_for_url(f"{base}/users/bob")
                    shot = args.out / f"dashboard-user{name}.png"
                    page.screenshot(path=str(shot), full_page=True)
                    print(shot)
                    if not name:
                        page.click("#activity a:text-is('default:1on1')")
                        page.wait_for_url(f"{base}/calls/default:1on1")
                        shot = args.out / "dashboard-call-trace.png"
                        page.screenshot(path=str(shot), full_page=True)
                        print(shot)
                    context.close()
                browser.close()
        finally:
            server.shutdown()
            thread.join(10)
            db.dispose()


if __name__ == "__main__":
    main()

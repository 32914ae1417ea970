"""The search by user over HTTP, through the real app on PostgreSQL: ``?user=`` on
/admin/events, GET /admin/users/<user_id>, and the dashboard's search box and user page
(the browser walk-through is test_dashboard_browser.py)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from tests.ops_data import ADMIN_TOKEN, API_KEY, SECRET, Seeder, now, ops_app, ring_body
from tests.worker.ops.test_user_activity import OTHER_APP, seed_bob
from webhook_app.dashboard import CSP
from worker.foundation.settings import load_settings
from worker.runtime.celery_app import create_celery
from worker.storage import preferences
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
pytestmark = [pytest.mark.services, pytest.mark.timeout(60)]


@pytest.fixture
def world(postgres_url, monkeypatch):
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    settings = load_settings(
        database_url=postgres_url,
        apps=[
            {"api_key": API_KEY, "api_secrets": [SECRET]},
            {"api_key": OTHER_APP, "api_secrets": [SECRET]},
        ],
        admin_token=ADMIN_TOKEN,
    )
    upgrade_to_head(postgres_url)
    db = Database(postgres_url)
    ids = seed_bob(db)
    app = ops_app(settings, db, create_celery(settings))
    yield app.test_client(), db, ids
    db.dispose()


# --- admin API --------------------------------------------------------------------------------


def test_admin_events_by_user(world):
    client, _, ids = world
    response = client.get(f"/admin/events?user=bob&app={API_KEY}", headers=AUTH)
    assert response.status_code == 200
    assert [e["id"] for e in response.get_json()["events"]] == [
        ids["fanout"],
        ids["calling"],
        ids["rung"],
    ]
    every_app = client.get("/admin/events?user=bob&since=4d", headers=AUTH).get_json()
    listed = [e["id"] for e in every_app["events"]]
    assert listed[0] == ids["other_app"] and listed[-1] == ids["old"]


def test_admin_user_answers_devices_preferences_and_each_outcome(world):
    client, db, ids = world
    with db.transaction() as session:
        preferences.set_preference(session, API_KEY, "bob", True, now() + timedelta(hours=1))
    response = client.get(f"/admin/users/bob?app={API_KEY}", headers=AUTH)
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    user = response.get_json()
    assert user["user_id"] == "bob" and user["api_key"] == API_KEY
    assert [(d["platform"], d["last_push_status"]) for d in user["devices"]] == [
        ("apns", "sent"),
        ("fcm", "failed"),
    ]
    assert user["preferences"][0]["muted_now"] is True
    events = {e["id"]: e for e in user["activity"]["events"]}
    assert [(p["status"], p["reason"], p["latency_ms"]) for p in events[ids["rung"]]["pushes"]] == [
        ("sent", None, 42.0),
        ("failed", "INTERNAL", 250.0),
    ]
    assert events[ids["fanout"]]["no_push"].startswith("no push: call pushes muted; ")
    assert events[ids["calling"]]["roles"] == ["caller"]

    first = client.get(f"/admin/users/bob?app={API_KEY}&limit=2", headers=AUTH).get_json()
    cursor = first["activity"]["next_before"]
    assert cursor == ids["calling"]
    rest = client.get(f"/admin/users/bob?app={API_KEY}&before={cursor}", headers=AUTH).get_json()
    assert [e["id"] for e in rest["activity"]["events"]] == [ids["rung"]]
    assert rest["activity"]["next_before"] is None


@pytest.mark.parametrize(
    ("path", "status", "field"),
    [
        ("/admin/users/bob?before=abc", 400, "before"),
        ("/admin/users/bob?before=0", 400, "before"),
        ("/admin/users/bob?since=soon", 400, "since"),
        ("/admin/users/bob?limit=0", 400, "limit"),
        ("/admin/users/bob?app=nope", 404, "app"),
        ("/admin/users/" + "b" * 256, 400, "user_id"),
        ("/admin/events?user=" + "b" * 256, 400, "user"),
        ("/admin/events?user=%00", 400, "user"),
    ],
)
def test_admin_bad_input_names_the_field(world, path, status, field):
    client, _, _ = world
    response = client.get(path, headers=AUTH)
    assert response.status_code == status and response.get_json()["field"] == field


def test_admin_user_needs_the_token(world):
    client, _, _ = world
    assert client.get("/admin/users/bob").status_code == 401


# --- dashboard --------------------------------------------------------------------------------


def logged_in(client):
    assert client.post("/dashboard/login", data={"token": ADMIN_TOKEN}).status_code == 302
    return client


@pytest.mark.parametrize(
    ("query", "target"),
    [
        ("bob", "/dashboard/users/bob"),
        ("  bob ", "/dashboard/users/bob"),
        ("default:c1", "/dashboard/calls/default:c1"),
        ("999999", "/dashboard/users/999999"),  # no such event: a user id
        ("", "/dashboard/"),
    ],
)
def test_the_search_box_goes_to_the_right_page(world, query, target):
    client = logged_in(world[0])
    response = client.get("/dashboard/search", query_string={"q": query})
    assert response.status_code == 302 and response.headers["Location"] == target


def test_digits_go_to_the_event_or_offer_a_choice(world):
    client, db, ids = world
    logged_in(client)
    rung = client.get("/dashboard/search", query_string={"q": str(ids["rung"])})
    assert rung.status_code == 302
    assert rung.headers["Location"] == f"/dashboard/events/{ids['rung']}"
    scoped = client.get(
        "/dashboard/search", query_string={"q": str(ids["other_app"]), "app": API_KEY}
    )
    assert scoped.headers["Location"] == f"/dashboard/users/{ids['other_app']}?app={API_KEY}"

    # A user whose id is also an event id: both are offered.
    Seeder(db).device(str(ids["rung"]), "fcm", "digits-fcm-" + "d" * 40)
    both = client.get("/dashboard/search", query_string={"q": str(ids["rung"])})
    page = both.get_data(as_text=True)
    assert both.status_code == 200
    assert f'href="/dashboard/events/{ids["rung"]}"' in page
    assert f'href="/dashboard/users/{ids["rung"]}"' in page


def test_the_user_page(world):
    client, db, ids = world
    logged_in(client)
    Seeder(db).event(ring_body("default:c9", "alice", ["bob"]), api_key=OTHER_APP)
    response = client.get(f"/dashboard/users/bob?app={API_KEY}")
    assert response.status_code == 200
    assert response.headers["Content-Security-Policy"] == CSP and "script-src" not in CSP
    page = response.get_data(as_text=True)
    assert "<script" not in page
    assert page.count('class="device"') == 2 and "b0b0b0…b0b0" in page
    assert f'data-event-id="{ids["rung"]}"' in page and "INTERNAL [500]" in page
    assert "250 ms" in page and "42 ms" in page
    assert 'href="/dashboard/calls/default:c1?app=' in page  # two apps: the trace of this one
    assert "default:c9" not in page  # the other app's
    assert 'role="search"' in page

    every_app = client.get("/dashboard/users/bob").get_data(as_text=True)
    assert "default:c9" in every_app and "Every app's" in every_app

    assert client.get("/dashboard/users/bob?app=nope").status_code == 404
    assert client.get("/dashboard/users/bob?before=x").status_code == 400
    odd = client.get("/dashboard/users/bob?since=soon")
    assert odd.status_code == 200 and "since: " in odd.get_data(as_text=True)
    paged = client.get(f"/dashboard/users/bob?app={API_KEY}&since=4d").get_data(as_text=True)
    assert f'data-event-id="{ids["old"]}"' in paged


def test_the_events_page_filters_by_user(world):
    client, _, ids = world
    logged_in(client)
    page = client.get(f"/dashboard/?user=bob&app={API_KEY}").get_data(as_text=True)
    listed = [int(i) for i in re.findall(r'href="/dashboard/events/(\d+)"', page)]
    assert listed == [ids["fanout"], ids["calling"], ids["rung"]]
    assert 'name="user" value="bob"' in page
    assert client.get("/dashboard/?user=" + "b" * 256).status_code == 400


def header_of(page: str) -> str:
    return page.split("</header>")[0]


def test_the_search_box_keeps_the_pages_app(world):
    client, _, _ = world
    logged_in(client)
    scoped = client.get(f"/dashboard/users/bob?app={API_KEY}").get_data(as_text=True)
    assert f'<input type="hidden" name="app" value="{API_KEY}">' in header_of(scoped)
    every_app = client.get("/dashboard/users/bob").get_data(as_text=True)
    assert 'name="app"' not in header_of(every_app)

"""Bad input to the operators' side (admin API and dashboard), with valid credentials, against
the real Flask app on PostgreSQL (which refuses NUL in text, unlike SQLite): arbitrary bytes in
paths, queries, forms, cookies and JSON bodies, lone surrogates and deep nesting included.

Properties: never a 5xx or an exception; a 4xx changes nothing stored.  Schemathesis
(test_openapi_schemathesis.py) covers the same endpoints from their OpenAPI description; this
reaches what a description does not generate (percent-encoded bytes, surrogate escapes, cookies).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from urllib.parse import quote_from_bytes

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select

from tests.e2e.processes import temporary_database
from tests.fuzz._counts import count
from tests.fuzz.strategies import JSON
from tests.ops_data import ADMIN_TOKEN, Seeder, ring_body
from webhook_app import create_app
from worker.foundation.settings import load_settings
from worker.runtime.celery_app import create_celery
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head
from worker.storage.models import DashboardSession, Delivery, WebhookEvent

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def site(postgres_admin_url: str) -> Iterator[tuple[object, Database]]:
    os.environ.pop("CALLPUSH_CONFIG", None)
    name = f"callpush_test_{uuid.uuid4().hex[:12]}"
    with temporary_database(postgres_admin_url, name) as url:
        settings = load_settings(
            database_url=url,
            admin_token=ADMIN_TOKEN,
            apps=[{"api_key": "fuzz-key", "api_secrets": ["fuzz-secret-" + "0" * 32]}],
            admin_throttle={"max_failures": 1_000_000},
        )
        upgrade_to_head(url)
        db = Database(url)
        Seeder(db).event(ring_body("default:c1", "alice", ["bob"]), status="failed")
        # No broker: replays go to kombu's in-memory transport, which nothing consumes.
        yield create_app(settings, db=db, celery=create_celery(settings)), db
        db.dispose()


def stored(db: Database) -> tuple[int, ...]:
    with db.transaction() as session:
        return tuple(
            int(session.scalar(query) or 0)
            for query in (
                select(func.count()).select_from(WebhookEvent),
                select(func.coalesce(func.sum(WebhookEvent.replays), 0)),
                select(func.count()).select_from(Delivery),
                select(func.count()).select_from(DashboardSession),
            )
        )


ENCODED = st.binary(max_size=40).map(lambda raw: quote_from_bytes(raw, safe=""))
SEGMENT = st.one_of(
    ENCODED,
    st.sampled_from(["%00", "%ED%A0%80", "²", "١٢", "9" * 30, "-1", "0", "..", "%2F", "a%00b"]),
)
VALUE = st.one_of(ENCODED, st.text(max_size=30), SEGMENT)
QUERY_NAMES = st.sampled_from(
    ["status", "type", "call", "since", "until", "limit", "user_id", "next", "x", "%00"]
)
QUERY = st.lists(st.tuples(QUERY_NAMES, VALUE), max_size=5).map(
    lambda pairs: "&".join(f"{name}={value}" for name, value in pairs)
)
GET_PATHS = st.sampled_from(
    [
        "/admin/events",
        "/admin/events/{}",
        "/admin/devices",
        "/admin/calls/{}/trace",
        "/dashboard/",
        "/dashboard/events/{}",
        "/dashboard/calls/{}",
        "/dashboard/login",
    ]
)
FORM_NAMES = st.sampled_from(
    ["csrf", "event_id", "failed", "since", "until", "type", "force", "confirm", "token", "next"]
)
FORM = st.lists(st.tuples(FORM_NAMES, st.text(max_size=30) | SEGMENT), max_size=6)
# JSON with what a schema-driven generator leaves out: lone surrogate escapes, NUL, deep arrays.
ODD_JSON_TEXT = st.one_of(
    st.sampled_from(
        [
            '{"event_ids": [1], "type": "\\ud800"}',
            '{"failed": true, "since": "1h", "type": "a\\u0000"}',
            '{"failed": true, "since": "\\udc80"}',
            '{"\\ud800": true}',
            '{"event_ids": [1e400]}',
            '{"event_ids": [-0.0, 1.5]}',
            "[" * 5000 + "]" * 5000,
            '{"event_ids": ' + "[" * 3000 + "]" * 3000 + "}",
        ]
    ),
    st.text(max_size=60),
)


def logged_in(app) -> object:
    client = app.test_client()
    assert client.post("/dashboard/login", data={"token": ADMIN_TOKEN}).status_code == 302
    return client


@given(path=GET_PATHS, segment=SEGMENT, query=QUERY)
def test_get_anything(site, path, segment, query):
    count("operator GET")
    app, db = site
    client = logged_in(app)
    before = stored(db)
    url = path.format(segment) + (f"?{query}" if query else "")
    response = client.get(url, headers=AUTH)
    assert response.status_code < 500, (url, response.get_data()[:300])
    if response.status_code >= 400:
        assert stored(db)[:3] == before[:3]


@given(form=FORM, with_csrf=st.booleans())
def test_post_any_dashboard_form(site, form, with_csrf):
    count("operator dashboard form")
    app, db = site
    client = logged_in(app)
    page = client.get("/dashboard/").get_data(as_text=True)
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    data = [(name, value) for name, value in form if name != "csrf"]
    if with_csrf:
        data.append(("csrf", csrf))
    for path in ("/dashboard/replay", "/dashboard/login", "/dashboard/logout"):
        before = stored(db)
        body = "&".join(f"{quote_from_bytes(n.encode(), safe='')}={v}" for n, v in data)
        response = client.post(path, data=body, content_type="application/x-www-form-urlencoded")
        assert response.status_code < 500, (path, data, response.get_data()[:300])
        if response.status_code >= 400:
            assert stored(db)[:3] == before[:3]


@given(body=ODD_JSON_TEXT | JSON.map(json.dumps))
def test_post_any_replay_body(site, body):
    count("operator replay body")
    app, db = site
    before = stored(db)
    response = app.test_client().post("/admin/replay", data=body, headers=AUTH)
    assert response.status_code < 500, (body[:200], response.get_data()[:300])
    if response.status_code >= 400:
        assert stored(db) == before
        assert "error" in response.get_json()


@given(cookie=st.text(max_size=80) | SEGMENT)
def test_any_cookie(site, cookie):
    count("operator cookie")
    app, _ = site
    client = app.test_client()
    client.set_cookie("callpush_dashboard", cookie, path="/dashboard/")
    for method, path in (("GET", "/dashboard/"), ("POST", "/dashboard/logout")):
        response = client.open(path, method=method)
        assert response.status_code in (302, 401), (cookie, response.status_code)

"""The dashboard over HTTP, without a browser (the browser walk-through is
test_dashboard_browser.py): server-side sessions and logout, the Secure cookie behind a trusted
proxy, the failed-login throttle, and no 5xx for odd input or odd stored bodies."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tests.ops_data import ADMIN_TOKEN, API_KEY, SECRET, Seeder, now, ops_app, ring_body
from worker.foundation.settings import load_settings
from worker.runtime.celery_app import create_celery
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head
from worker.storage.models import DashboardSession, WebhookEvent

COOKIE = "callpush_dashboard"


def build(database_url: str, **overrides):
    settings = load_settings(
        database_url=database_url,
        apps=[{"api_key": API_KEY, "api_secrets": [SECRET]}],
        admin_token=ADMIN_TOKEN,
        **overrides,
    )
    upgrade_to_head(database_url)
    db = Database(database_url)
    return ops_app(settings, db, create_celery(settings)), db


@pytest.fixture
def site(sqlite_url, monkeypatch):
    """``make(**settings)`` -> (app, db) on SQLite, no broker."""
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    made: list[Database] = []

    def make(**overrides):
        app, db = build(sqlite_url, **overrides)
        made.append(db)
        return app, db

    yield make
    for db in made:
        db.dispose()


def log_in(client, token: str = ADMIN_TOKEN, **kwargs):
    return client.post("/dashboard/login", data={"token": token}, **kwargs)


def session_cookie(response) -> str:
    (header,) = [h for h in response.headers.getlist("Set-Cookie") if h.startswith(COOKIE)]
    return header


def csrf_of(client) -> str:
    page = client.get("/dashboard/").get_data(as_text=True)
    return re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)


# --- sessions ---------------------------------------------------------------------------------


def test_logging_out_revokes_the_session_even_if_the_cookie_is_replayed(site):
    app, db = site()
    client = app.test_client()
    login = log_in(client)
    assert login.status_code == 302
    header = session_cookie(login)
    assert "HttpOnly" in header and "SameSite=Strict" in header and "Path=/dashboard/" in header
    assert "Secure" not in header  # plain http, no trusted proxy
    value = client.get_cookie(COOKIE, path="/dashboard/").value
    assert ADMIN_TOKEN not in value
    assert client.get("/dashboard/").status_code == 200

    logout = client.post("/dashboard/logout", data={"csrf": csrf_of(client)})
    assert logout.status_code == 302 and logout.headers["Location"].endswith("/dashboard/login")

    # Someone who copied the cookie before the logout replays it.
    thief = app.test_client()
    thief.set_cookie(COOKIE, value, path="/dashboard/")
    refused = thief.get("/dashboard/")
    assert refused.status_code == 302 and "/dashboard/login" in refused.headers["Location"]
    assert thief.post("/dashboard/replay", data={"event_id": "1"}).status_code == 401
    with db.transaction() as session:
        (row,) = session.scalars(select(DashboardSession))
        assert row.revoked_at is not None


def test_a_new_admin_token_ends_every_session(site):
    app, _ = site()
    client = app.test_client()
    log_in(client)
    assert client.get("/dashboard/").status_code == 200
    app.config["CALLPUSH_ADMIN_TOKEN"] = "another-admin-token-" + "9" * 20
    assert client.get("/dashboard/").status_code == 302


@pytest.mark.parametrize(
    "cookie",
    [
        "1.é",
        f"{int(now().timestamp())}.{'é' * 64}",  # a fresh issue time, a non-ASCII MAC
        f"{int(now().timestamp())}.{'a' * 64}",  # the format before server-side sessions
        "²" * 43,
        "x" * 4000,
        "a\x01b",
    ],
)
def test_a_forged_cookie_is_refused_not_a_crash(site, cookie):
    app, _ = site()
    client = app.test_client()
    client.set_cookie(COOKIE, cookie, path="/dashboard/")
    response = client.get("/dashboard/")
    assert response.status_code == 302 and "/dashboard/login" in response.headers["Location"]
    assert client.post("/dashboard/logout", data={"csrf": "x"}).status_code == 401


def test_the_cookie_is_secure_over_https_and_behind_a_trusted_tls_proxy(site):
    direct, _ = site()
    header = session_cookie(log_in(direct.test_client(), base_url="https://ops.example"))
    assert "Secure" in header

    proxied, _ = site(trusted_proxies=1)
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.9"}
    assert "Secure" in session_cookie(log_in(proxied.test_client(), headers=forwarded))

    # Without a trusted proxy the header is anyone's to send: ignored.
    untrusted, _ = site()
    assert "Secure" not in session_cookie(log_in(untrusted.test_client(), headers=forwarded))


# --- throttling -------------------------------------------------------------------------------


def test_failed_logins_are_throttled_per_client_even_for_the_right_token(site):
    app, _ = site(admin_throttle={"max_failures": 3, "window_seconds": 600})
    attacker = app.test_client()
    attacker.environ_base["REMOTE_ADDR"] = "203.0.113.5"
    for _ in range(3):
        assert log_in(attacker, "wrong-token").status_code == 401
    refused = log_in(attacker, "wrong-token")
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 600
    assert "Too many failed attempts" in refused.get_data(as_text=True)
    assert log_in(attacker).status_code == 429  # the right token too: no oracle
    # The API shares the count: the same guesser, the same secret.
    api = attacker.get("/admin/events", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert api.status_code == 429 and api.headers["Retry-After"]

    operator = app.test_client()
    operator.environ_base["REMOTE_ADDR"] = "198.51.100.20"
    assert log_in(operator).status_code == 302


def test_behind_a_trusted_proxy_the_forwarded_address_is_throttled(site):
    app, _ = site(trusted_proxies=1, admin_throttle={"max_failures": 2})
    client = app.test_client()  # every request comes from the proxy's address

    def attempt(forwarded_for: str, token: str = "wrong-token") -> int:
        headers = {"X-Forwarded-For": forwarded_for}
        return log_in(client, token, headers=headers).status_code

    assert [attempt("203.0.113.5") for _ in range(3)] == [401, 401, 429]
    assert attempt("198.51.100.20", ADMIN_TOKEN) == 302  # another client behind the proxy
    # A client cannot escape by claiming another address in front of the proxy's entry.
    assert attempt("1.2.3.4, 203.0.113.5") == 429


def test_without_a_trusted_proxy_a_forged_forwarded_for_does_not_escape(site):
    app, _ = site(admin_throttle={"max_failures": 2})
    client = app.test_client()
    statuses = [
        log_in(client, "wrong", headers={"X-Forwarded-For": f"10.0.0.{n}"}).status_code
        for n in range(4)
    ]
    assert statuses == [401, 401, 429, 429]


# --- odd input --------------------------------------------------------------------------------


@pytest.fixture
def logged_in(postgres_url, redis_url, monkeypatch):
    """A logged-in client on PostgreSQL (which refuses NUL) with one event."""
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    app, db = build(postgres_url, broker_url=redis_url)
    event_id = Seeder(db).event(ring_body("default:c1", "alice", ["bob"]))
    client = app.test_client()
    log_in(client)
    yield client, db, event_id
    db.dispose()


def events_count(db: Database) -> int:
    with db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(WebhookEvent)) or 0)


@pytest.mark.services
@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/dashboard/?type=%00", 400, "type contains a NUL character"),
        ("/dashboard/?call=a%ED%A0%80", 200, ""),  # not UTF-8: decoded with U+FFFD
        ("/dashboard/?since=0001-01-01T00:00:00%2B14:00", 200, "out of the range"),
        ("/dashboard/?since=²&until=9" + "9" * 5000 + "w", 200, "neither a duration"),
        ("/dashboard/?%00=1", 200, "Pushes in the last hour"),  # unknown fields are ignored
        ("/dashboard/?call=a&call=b", 400, "call is given 2 times"),
        ("/dashboard/events/99999999999999999999999", 404, "There is no event"),
        ("/dashboard/events/²", 404, ""),
        ("/dashboard/calls/a%00b", 400, "call_cid contains a NUL character"),
        ("/dashboard/calls/" + "x" * 3000, 200, "No events for this call"),
        ("/dashboard/login?next=/dashboard/%0d%0aSet-Cookie:x=1", 200, 'value="/dashboard/"'),
    ],
)
def test_odd_query_and_path_values_get_a_4xx_or_a_page(logged_in, path, status, message):
    client, _, _ = logged_in
    response = client.get(path)
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert message in response.get_data(as_text=True)


@pytest.mark.services
def test_a_query_string_that_is_not_utf8_is_a_400(logged_in):
    """gunicorn and waitress refuse raw non-ASCII bytes in the request line themselves; behind
    another server they would reach werkzeug, whose ``request.args`` fails on them."""
    client, _, _ = logged_in
    raw = {"QUERY_STRING": "type=\xff\xfe&since=\xc3"}  # WSGI: the bytes as latin-1 text
    response = client.get("/dashboard/", environ_overrides=raw)
    assert response.status_code == 400 and "not UTF-8" in response.get_data(as_text=True)
    admin = client.get(
        "/admin/events",
        environ_overrides=raw,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert admin.status_code == 400 and admin.get_json()["field"] == "query"


@pytest.mark.services
@pytest.mark.parametrize(
    ("form", "status", "message"),
    [
        ({"event_id": "²"}, 400, "event_id must be an integer from 1 to"),
        ({"event_id": "99999999999999999999999"}, 400, "event_id must be an integer"),
        ({"event_id": "1" * 5000}, 400, "event_id must be an integer"),
        ({"event_id": "-1"}, 400, "event_id must be an integer"),
        ({"event_id": "1\x00"}, 400, "event_id must be an integer"),
        ({"failed": "1", "since": "0001-01-01T00:00:00+14:00"}, 400, "out of the range"),
        ({"failed": "1", "since": "1h", "type": "\x00"}, 400, "type contains a NUL"),
        ({}, 400, "No event to replay was chosen"),
    ],
)
def test_odd_replay_forms_get_a_400_and_change_nothing(logged_in, form, status, message):
    client, db, _ = logged_in
    before = events_count(db)
    response = client.post("/dashboard/replay", data={"csrf": csrf_of(client), **form})
    assert response.status_code == status
    assert message in response.get_data(as_text=True)
    assert events_count(db) == before


@pytest.mark.services
def test_odd_login_forms_are_no_5xx(logged_in):
    client, _, _ = logged_in
    anonymous = client.application.test_client()
    assert log_in(anonymous, "tok\x00en").status_code == 401  # not the token, nothing stored
    nasty_next = {"token": ADMIN_TOKEN, "next": "/dashboard/\r\nSet-Cookie: x=1"}
    response = anonymous.post("/dashboard/login", data=nasty_next)
    assert response.status_code == 302 and response.headers["Location"] == "/dashboard/"
    elsewhere = anonymous.post("/dashboard/login", data={"token": ADMIN_TOKEN, "next": "//evil"})
    assert elsewhere.headers["Location"] == "/dashboard/"


# --- odd stored bodies ------------------------------------------------------------------------


def store_raw(db: Database, body: str, **fields) -> int:
    event_id = Seeder(db).event(
        {"type": "call.ring", "call_cid": "default:odd", **fields},
        received_at=now() - timedelta(minutes=1),
    )
    with db.transaction() as session:
        session.get(WebhookEvent, event_id).body = body
    return event_id


@pytest.mark.services
def test_odd_stored_bodies_render_safely(logged_in):
    client, db, _ = logged_in
    surrogate = store_raw(db, json.dumps(ring_body("default:odd", "alice", ["\ud800"])))
    deep = store_raw(db, "[" * 100_000 + "]" * 100_000)
    huge = store_raw(db, json.dumps({"type": "call.ring", "pad": "y" * (2 * 1024 * 1024)}))
    controls = store_raw(db, json.dumps({"type": "call.ring", "x": "\x1b[2J\u202e"}))
    odd_type = Seeder(db).event({"type": "call.ring\n<script>alert(1)</script>", "call_cid": "c:1"})

    page = client.get(f"/dashboard/events/{surrogate}")
    assert page.status_code == 200
    assert "\\ud800" in page.get_data(as_text=True)

    assert client.get(f"/dashboard/events/{deep}").status_code == 200
    shown = client.get(f"/dashboard/events/{huge}").get_data(as_text=True)
    assert "more characters)" in shown and len(shown) < 400_000

    text = client.get(f"/dashboard/events/{controls}").get_data(as_text=True)
    assert "\\u001b[2J\\u202e" in text

    listing = client.get("/dashboard/").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in listing  # autoescaped
    assert client.get(f"/dashboard/events/{odd_type}").status_code == 200
    assert client.get("/dashboard/calls/default:odd").status_code == 200


# --- a ring that rang nobody ------------------------------------------------------------------


def test_a_ring_that_rang_nobody_is_a_warning_not_green(site):
    app, db = site()
    seed = Seeder(db)
    device = seed.device("bob", "fcm", "bob-fcm-" + "b" * 40)
    rang = seed.event(ring_body("default:rang", "alice", ["bob"]))
    seed.delivery(rang, device, "sent", user_id="bob", platform="fcm", kind="data")
    nobody = seed.event(ring_body("default:nobody", "alice", ["carol"]))
    seed.skipped_recipient(nobody, "carol", "no active device")
    client = app.test_client()
    log_in(client)

    rows = {
        int(match.group(1)): match.group(0)
        for match in re.finditer(
            r'<tr>\s*<td class="num"><a href="/dashboard/events/(\d+)">.*?</tr>',
            client.get("/dashboard/").get_data(as_text=True),
            re.S,
        )
    }
    assert 'class="badge s-processed"' in rows[rang] and "reached 1 of 1 recipient" in rows[rang]
    assert 'class="badge s-unreached"' in rows[nobody]
    assert 'class="reach-none">rang nobody (1 recipient)' in rows[nobody]

    page = client.get(f"/dashboard/events/{nobody}").get_data(as_text=True)
    assert 'class="badge s-unreached">processed' in page
    assert re.search(r'<dd id="reach" class="reach-none">rang nobody \(1 recipient\)</dd>', page)
    assert "no push" in page and "no active device" in page
    reached = client.get(f"/dashboard/events/{rang}").get_data(as_text=True)
    assert '<dd id="reach">reached 1 of 1 recipient</dd>' in reached

    trace = client.get("/dashboard/calls/default:nobody").get_data(as_text=True)
    assert 'class="badge s-unreached">processed' in trace
    assert re.search(r'no push to <a href="/dashboard/users/carol">carol</a>', trace)

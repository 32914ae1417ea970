"""Bad input to the device and preference API (issue 7 item 7), against the real Flask app on
SQLite: garbage, forged, expired and wrongly signed tokens, and wrong types in every field.

Properties: never a 5xx or an exception; without a valid Stream token nothing changes (401);
with one, a garbage body is answered 4xx (nothing changes) or 2xx (only the caller's own rows).
"""

from __future__ import annotations

import os
import time

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from tests.fuzz._counts import count
from tests.fuzz.strategies import JSON, NASTY_STRINGS
from webhook_app import create_app
from worker.foundation.settings import load_settings
from worker.runtime.celery_app import create_celery
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head
from worker.storage.models import Device, UserPreference

API_KEY = "fuzz-key"
SECRET = "fuzz-secret-0123456789abcdef0123456789abcdef0123456789abcdef0123"
WRONG_SECRET = "wrong-secret-0123456789abcdef0123456789abcdef0123456789abcdef01"
FIXTURE_OK = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
FIELDS = ["token", "platform", "voip", "app_id", "user_id", "call_pushes", "until", "voip_token"]


class Api:
    def __init__(self, url: str) -> None:
        os.environ.pop("CALLPUSH_CONFIG", None)
        settings_ = load_settings(
            database_url=url, apps=[{"api_key": API_KEY, "api_secrets": [SECRET]}]
        )
        upgrade_to_head(url)
        self.db = Database(url)
        self.app = create_app(settings_, db=self.db, celery=create_celery(settings_))
        self.client = self.app.test_client()

    def rows(self) -> tuple[int, int]:
        with self.db.transaction() as session:
            devices = session.scalar(select(func.count()).select_from(Device)) or 0
            prefs = session.scalar(select(func.count()).select_from(UserPreference)) or 0
        return int(devices), int(prefs)

    def owners(self) -> set[str]:
        with self.db.transaction() as session:
            return set(session.scalars(select(Device.user_id)))


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Api:
    made = Api(f"sqlite:///{tmp_path_factory.mktemp('fuzz-api') / 'callpush.db'}")
    yield made
    made.db.dispose()


def token(claims: dict, secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


ASCII = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=120)
SAFE_USER = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)
BAD_AUTH = st.one_of(
    st.none(),
    st.just(""),
    ASCII,
    ASCII.map(lambda t: "Bearer " + t),
    st.just("Basic dXNlcjpwYXNz"),
    st.just("Bearer " + "a" * 5000),
    SAFE_USER.map(lambda u: "Bearer " + token({"user_id": u}, WRONG_SECRET)),
    SAFE_USER.map(lambda u: "Bearer " + token({"user_id": u}, SECRET, "HS512")),
    SAFE_USER.map(lambda u: "Bearer " + token({"user_id": u, "exp": int(time.time()) - 3600})),
    SAFE_USER.map(lambda u: "Bearer " + token({"user_id": u, "nbf": int(time.time()) + 3600})),
    SAFE_USER.map(
        lambda u: "Bearer " + jwt.encode({"user_id": u}, None, algorithm="none")  # alg: none
    ),
    st.just("Bearer " + token({"user_id": ""})),
    st.just("Bearer " + token({"user_id": 42})),
)
REQUESTS = st.sampled_from(
    [
        ("POST", "/devices"),
        ("GET", "/devices"),
        ("DELETE", "/devices/"),
        ("GET", "/preferences"),
        ("PUT", "/preferences"),
    ]
)
BODY = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6),
    JSON,
    st.fixed_dictionaries(
        {"token": ASCII | NASTY_STRINGS, "platform": st.sampled_from(["apns", "fcm", "x"])},
        optional={"voip": JSON, "app_id": JSON, "user_id": JSON},
    ),
)


def call(api: Api, method: str, path: str, auth: str | None, body, query: str, raw: bytes | None):
    headers = {"Authorization": auth} if auth is not None else {}
    if path.endswith("/"):
        path += query or "tok"
        query = ""
    url = path + (f"?user_id={query}" if query else "")
    if raw is not None:
        return api.client.open(url, method=method, data=raw, headers=headers)
    return api.client.open(url, method=method, json=body, headers=headers)


@FIXTURE_OK
@given(
    request=REQUESTS,
    auth=BAD_AUTH,
    body=BODY,
    query=st.sampled_from(["", "alice"]) | SAFE_USER,
    raw=st.none() | st.binary(max_size=256),
)
def test_without_a_valid_token_nothing_changes(api: Api, request, auth, body, query, raw):
    count("devices api: bad token")
    before = api.rows()
    response = call(api, *request, auth, body, query, raw)
    assert response.status_code == 401, (response.status_code, response.get_data()[:200])
    assert api.rows() == before


@FIXTURE_OK
@given(
    request=REQUESTS,
    user=SAFE_USER | NASTY_STRINGS,
    server=st.booleans(),
    body=BODY,
    query=st.sampled_from(["", "alice"]) | SAFE_USER,
    raw=st.none() | st.binary(max_size=256),
)
def test_valid_token_with_garbage_is_4xx_or_acts_for_the_caller_only(
    api: Api, request, user, server, body, query, raw
):
    count("devices api: valid token, garbage")
    auth = "Bearer " + token({"server": True} if server else {"user_id": user})
    owners_before = api.owners()
    before = api.rows()
    response = call(api, *request, auth, body, query, raw)
    status = response.status_code
    assert status < 500, (status, response.get_data()[:300])
    if status >= 400:
        assert api.rows() == before
    new_owners = api.owners() - owners_before
    if not server:
        assert new_owners <= {user}


def test_user_id_with_a_lone_surrogate_is_not_a_5xx(api: Api):
    count("devices api: lone surrogate")
    auth = "Bearer " + token({"user_id": "bob\ud800"})
    response = api.client.post(
        "/devices", json={"token": "ab" * 32, "platform": "apns"}, headers={"Authorization": auth}
    )
    assert response.status_code < 500

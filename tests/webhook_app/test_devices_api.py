"""The device and preference API through the real app on SQLite, authenticated with Stream
tokens: who may see and change whose devices, and every rejection."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from webhook_app import create_app, devices_api
from worker.celery_app import create_celery
from worker.settings import load_settings
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head

API_KEY = "test-key"
SECRET = "test-secret-0123456789abcdef0123456789abcdef0123456789abcdef0123"
OLD_SECRET = "old-secret-0123456789abcdef0123456789abcdef0123456789abcdef01234"
WRONG_SECRET = "wrong-secret-0123456789abcdef0123456789abcdef0123456789abcdef012"

APNS_TOKEN = "a1" * 32
VOIP_TOKEN = "b2" * 32
FCM_TOKEN = "fcm-token:APA91b" + "x" * 140
BOB_TOKEN = "c3" * 32


def sign(claims: dict, secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def auth(claims: dict | None = None, **kwargs) -> dict[str, str]:
    return {"Authorization": "Bearer " + sign(claims or {"server": True}, **kwargs)}


ALICE = auth({"user_id": "alice"})
BOB = auth({"user_id": "bob"})
SERVER = auth({"server": True})


@pytest.fixture
def client(sqlite_url, monkeypatch):
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    settings = load_settings(
        database_url=sqlite_url,
        apps=[
            {
                "api_key": API_KEY,
                "api_secrets": [SECRET, OLD_SECRET],
                "apns_providers": {"ios-voip-debug": {"bundle_id": "com.example.app.debug"}},
            }
        ],
    )
    upgrade_to_head(sqlite_url)
    db = Database(sqlite_url)
    app = create_app(settings, db=db, celery=create_celery(settings))
    if "devices_api" not in app.blueprints:  # until create_app registers it
        app.register_blueprint(devices_api.blueprint)
    yield app.test_client()
    db.dispose()


def register(client, headers, token=APNS_TOKEN, **fields):
    return client.post(
        "/devices", json={"token": token, "platform": "apns", **fields}, headers=headers
    )


def tokens_of(client, headers, query=""):
    response = client.get("/devices" + query, headers=headers)
    assert response.status_code == 200, response.json
    return sorted(d["token"] for d in response.json["devices"])


# --- devices: a user manages only their own ----------------------------------------------------


def test_user_registers_lists_and_deletes_own_devices(client):
    created = register(client, ALICE, voip=True, app_id="com.example.app")
    assert created.status_code == 201
    body = created.json
    assert body["user_id"] == "alice" and body["platform"] == "apns" and body["voip"] is True
    assert body["token"] == APNS_TOKEN and body["app_id"] == "com.example.app"
    assert body["disabled"] is False and body["created_at"].endswith("Z")
    assert register(client, ALICE, FCM_TOKEN, platform="fcm").status_code == 201

    assert tokens_of(client, ALICE) == sorted([APNS_TOKEN, FCM_TOKEN])
    assert tokens_of(client, ALICE, "?user_id=alice") == sorted([APNS_TOKEN, FCM_TOKEN])

    deleted = client.delete(f"/devices/{FCM_TOKEN}", headers=ALICE)
    assert deleted.status_code == 204 and deleted.data == b""
    assert tokens_of(client, ALICE) == [APNS_TOKEN]
    assert client.delete(f"/devices/{FCM_TOKEN}", headers=ALICE).status_code == 404


def test_a_device_names_one_of_its_apps_push_providers(client):
    created = register(client, ALICE, voip=True, push_provider_name="ios-voip-debug")
    assert created.status_code == 201 and created.json["push_provider_name"] == "ios-voip-debug"
    listed = client.get("/devices", headers=ALICE).json["devices"]
    assert [d["push_provider_name"] for d in listed] == ["ios-voip-debug"]
    # Without a name: the app's default provider.
    again = register(client, ALICE, voip=True)
    assert again.status_code == 201 and again.json["push_provider_name"] is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"push_provider_name": "ios-voip"}, "push provider 'ios-voip' is not configured for app"),
        (
            {"platform": "fcm", "push_provider_name": "ios-voip-debug"},
            "fcm providers: none",  # an APNs provider's name is no FCM provider
        ),
        ({"push_provider_name": 7}, "push_provider_name must be a non-empty string"),
        ({"push_provider_name": "x" * 37}, "longer than 36"),
    ],
)
def test_an_unknown_push_provider_name_is_refused(client, fields, message):
    response = register(client, ALICE, **fields)
    assert response.status_code == 400
    assert response.json["field"] == "push_provider_name"
    assert message in response.json["error"]
    assert tokens_of(client, ALICE) == []


@pytest.mark.parametrize(
    ("app_id", "message"),
    [
        ("com.example.app.voip", "ends in '.voip'"),  # would make the topic ….voip.voip
        ("com.example.app.VoIP", "ends in '.voip'"),
        ("com.example_app", "only letters"),
        ("com..example", "only letters"),
        ("example", "reverse-DNS"),
    ],
)
def test_an_app_id_apns_would_not_accept_is_refused(client, app_id, message):
    response = register(client, ALICE, voip=True, app_id=app_id)
    assert response.status_code == 400
    assert response.json["field"] == "app_id" and message in response.json["error"]
    assert tokens_of(client, ALICE) == []


def test_an_fcm_app_id_is_not_a_bundle_id(client):
    response = register(client, ALICE, FCM_TOKEN, platform="fcm", app_id="my-firebase-project")
    assert response.status_code == 201


def test_registering_again_updates_the_same_device(client):
    first = register(client, ALICE, voip=False).json
    again = register(client, ALICE, voip=True)
    assert again.status_code == 201
    assert again.json["id"] == first["id"] and again.json["voip"] is True
    assert tokens_of(client, ALICE) == [APNS_TOKEN]


def test_user_cannot_see_or_delete_bobs_devices(client):
    assert register(client, BOB, BOB_TOKEN).status_code == 201
    assert register(client, ALICE).status_code == 201

    assert tokens_of(client, ALICE) == [APNS_TOKEN]
    assert client.get("/devices?user_id=bob", headers=ALICE).status_code == 403

    # Bob's token and a token that exists nowhere answer the same.
    bobs = client.delete(f"/devices/{BOB_TOKEN}", headers=ALICE)
    nowhere = client.delete(f"/devices/{'d4' * 32}", headers=ALICE)
    assert bobs.status_code == nowhere.status_code == 404
    assert bobs.json == nowhere.json == {"error": "no such device"}
    assert client.delete(f"/devices/{BOB_TOKEN}?user_id=bob", headers=ALICE).status_code == 403
    assert tokens_of(client, BOB) == [BOB_TOKEN]


def test_user_cannot_register_for_someone_else(client):
    response = register(client, ALICE, user_id="bob")
    assert response.status_code == 403
    assert "own user_id" in response.json["error"]
    assert register(client, ALICE, user_id="alice").status_code == 201
    assert tokens_of(client, SERVER, "?user_id=bob") == []


# --- devices: a server token manages anyone's ----------------------------------------------------


def test_server_token_manages_anyones_devices(client):
    created = register(client, SERVER, BOB_TOKEN, user_id="bob")
    assert created.status_code == 201 and created.json["user_id"] == "bob"
    register(client, ALICE)

    assert tokens_of(client, SERVER, "?user_id=bob") == [BOB_TOKEN]
    assert tokens_of(client, SERVER, "?user_id=alice") == [APNS_TOKEN]
    # A server deletes any token; with ?user_id= only if it is that user's.
    assert client.delete(f"/devices/{APNS_TOKEN}?user_id=bob", headers=SERVER).status_code == 404
    assert client.delete(f"/devices/{APNS_TOKEN}", headers=SERVER).status_code == 204
    assert client.delete(f"/devices/{BOB_TOKEN}?user_id=bob", headers=SERVER).status_code == 204
    assert tokens_of(client, SERVER, "?user_id=alice") == []
    assert tokens_of(client, SERVER, "?user_id=bob") == []


def test_server_token_must_name_the_user(client):
    response = register(client, SERVER)
    assert response.status_code == 400 and response.json["field"] == "user_id"
    listing = client.get("/devices", headers=SERVER)
    assert listing.status_code == 400 and listing.json["field"] == "user_id"
    assert client.get("/preferences", headers=SERVER).json["field"] == "user_id"


# --- authentication ------------------------------------------------------------------------


def rejected(client, headers, method="get", path="/devices"):
    response = getattr(client, method)(path, headers=headers)
    assert response.status_code == 401, response.json
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    return response.json["error"]


def test_missing_authorization_is_401(client):
    assert "missing Authorization" in rejected(client, {})
    assert "missing Authorization" in rejected(client, {}, "post")
    assert "missing Authorization" in rejected(client, {}, "delete", f"/devices/{APNS_TOKEN}")
    assert "missing Authorization" in rejected(client, {}, "put", "/preferences")


def test_expired_token_is_401_expired(client):
    expired = auth({"user_id": "alice", "exp": int(time.time()) - 60})
    assert "expired" in rejected(client, expired)
    # Within the 10 s leeway it still works.
    assert tokens_of(client, auth({"user_id": "alice", "exp": int(time.time()) - 3})) == []


def test_wrong_secret_is_401(client):
    assert "signature" in rejected(client, auth({"user_id": "alice"}, secret=WRONG_SECRET))


def test_alg_none_and_hs512_are_401(client):
    none_token = jwt.encode({"user_id": "alice"}, None, algorithm="none")
    assert "algorithm" in rejected(client, {"Authorization": f"Bearer {none_token}"})
    hs512 = auth({"user_id": "alice"}, secret=SECRET, algorithm="HS512")
    assert "only HS256" in rejected(client, hs512)


def test_malformed_and_non_string_user_id_are_401(client):
    assert "malformed" in rejected(client, {"Authorization": "Bearer nope"})
    assert "user_id" in rejected(client, auth({"user_id": 42}))


def test_rotated_out_secret_is_still_accepted(client):
    old = auth({"user_id": "alice"}, secret=OLD_SECRET)
    assert register(client, old).status_code == 201
    assert tokens_of(client, old) == [APNS_TOKEN]


def test_raw_token_without_bearer_is_accepted(client):
    raw = {"Authorization": sign({"user_id": "alice"})}
    assert register(client, raw).status_code == 201


# --- body validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"platform": "apns"}, "token"),
        ({"token": "", "platform": "apns"}, "token"),
        ({"token": 123, "platform": "apns"}, "token"),
        ({"token": "has space", "platform": "apns"}, "token"),
        ({"token": "x" * 513, "platform": "apns"}, "token"),
        ({"token": APNS_TOKEN}, "platform"),
        ({"token": APNS_TOKEN, "platform": "huawei"}, "platform"),
        ({"token": APNS_TOKEN, "platform": "apns", "voip": "yes"}, "voip"),
        ({"token": APNS_TOKEN, "platform": "apns", "voip": 1}, "voip"),
        ({"token": FCM_TOKEN, "platform": "fcm", "voip": True}, "voip"),
        ({"token": APNS_TOKEN, "platform": "apns", "app_id": 5}, "app_id"),
        ({"token": APNS_TOKEN, "platform": "apns", "user_id": 7}, "user_id"),
        ({"token": APNS_TOKEN, "platform": "apns", "voip_token": True}, "voip_token"),
    ],
)
def test_bad_device_bodies_are_400_naming_the_field(client, body, field):
    response = client.post("/devices", json=body, headers=ALICE)
    assert response.status_code == 400
    assert response.json["field"] == field
    assert field in response.json["error"] or field == "voip_token"


@pytest.mark.parametrize("data", [b"", b"not json", b"[1, 2]", b'"token"'])
def test_non_object_bodies_are_400(client, data):
    response = client.post(
        "/devices", data=data, headers=ALICE | {"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json == {"error": "the body must be a JSON object"}


def test_authentication_comes_before_validation(client):
    assert client.post("/devices", json={}).status_code == 401


def test_device_tokens_are_never_logged_whole(client, caplog):
    caplog.set_level(logging.DEBUG)
    register(client, ALICE)
    client.delete(f"/devices/{APNS_TOKEN}", headers=ALICE)
    forged = auth({"user_id": "alice"}, secret=WRONG_SECRET)
    client.get("/devices", headers=forged)
    client.delete(f"/devices/{BOB_TOKEN}", headers=forged)
    logged = caplog.text
    assert "registered" in logged and "removed" in logged and "rejected" in logged
    assert APNS_TOKEN not in logged and BOB_TOKEN not in logged
    assert "DELETE /devices/<path:token>: token rejected" in logged
    assert ALICE["Authorization"].split()[1] not in logged


# --- preferences ---------------------------------------------------------------------------------


def test_preferences_round_trip(client):
    initial = client.get("/preferences", headers=ALICE)
    assert initial.status_code == 200
    assert initial.json == {
        "user_id": "alice",
        "call_pushes": "on",
        "until": None,
        "updated_at": None,
    }

    off = client.put("/preferences", json={"call_pushes": "off"}, headers=ALICE)
    assert off.status_code == 200
    assert off.json["call_pushes"] == "off" and off.json["until"] is None
    assert client.get("/preferences", headers=ALICE).json["call_pushes"] == "off"

    until = (datetime.now(UTC) + timedelta(hours=8)).replace(microsecond=0)
    text = until.isoformat().replace("+00:00", "Z")
    timed = client.put("/preferences", json={"call_pushes": "off", "until": text}, headers=ALICE)
    assert timed.status_code == 200 and timed.json["until"] == text
    assert client.get("/preferences", headers=ALICE).json["until"] == text

    on = client.put("/preferences", json={"call_pushes": "on"}, headers=ALICE)
    assert on.json["call_pushes"] == "on" and on.json["until"] is None
    assert on.json["updated_at"].endswith("Z")

    # Bob is untouched.
    assert client.get("/preferences", headers=BOB).json["call_pushes"] == "on"


def test_preferences_auth_rules(client):
    assert client.get("/preferences?user_id=bob", headers=ALICE).status_code == 403
    response = client.put(
        "/preferences", json={"call_pushes": "off", "user_id": "bob"}, headers=ALICE
    )
    assert response.status_code == 403

    by_server = client.put(
        "/preferences", json={"call_pushes": "off", "user_id": "bob"}, headers=SERVER
    )
    assert by_server.status_code == 200 and by_server.json["user_id"] == "bob"
    assert client.get("/preferences", headers=BOB).json["call_pushes"] == "off"
    assert client.get("/preferences?user_id=bob", headers=SERVER).json["call_pushes"] == "off"
    assert "expired" in rejected(
        client, auth({"user_id": "alice", "exp": int(time.time()) - 60}), "put", "/preferences"
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "call_pushes"),
        ({"call_pushes": "maybe"}, "call_pushes"),
        ({"call_pushes": False}, "call_pushes"),
        ({"call_pushes": "on", "until": "2099-01-01T00:00:00Z"}, "until"),
        ({"call_pushes": "off", "until": "2099-01-01"}, "until"),
        ({"call_pushes": "off", "until": "2099-01-01T00:00:00"}, "until"),
        ({"call_pushes": "off", "until": 1893456000}, "until"),
        ({"call_pushes": "off", "until": "2000-01-01T00:00:00Z"}, "until"),
        ({"call_pushes": "off", "muted": True}, "muted"),
    ],
)
def test_bad_preference_bodies_are_400_naming_the_field(client, body, field):
    response = client.put("/preferences", json=body, headers=ALICE)
    assert response.status_code == 400
    assert response.json["field"] == field


def test_storage_errors_are_503_json_and_not_logged_with_the_token(client, monkeypatch, caplog):
    from sqlalchemy.exc import OperationalError

    def broken(*args, **kwargs):
        raise OperationalError("INSERT INTO devices ...", {"token": APNS_TOKEN}, Exception("down"))

    monkeypatch.setattr(devices_api.registry, "add_device", broken)
    response = register(client, ALICE)
    assert response.status_code == 503
    assert response.json == {"error": "storage unavailable, retry later"}
    assert "OperationalError" in caplog.text and APNS_TOKEN not in caplog.text

"""The device and preference API through the real app on SQLite, authenticated with Stream
tokens: who may see and change whose devices, and every rejection."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from webhook_app import create_app, devices_api
from worker.foundation.settings import load_settings
from worker.runtime.celery_app import create_celery
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


# --- Stream apps are tenants ---------------------------------------------------------------

PROD, DEV = "prod-key", "dev-key"
DEV_SECRET = "dev-secret-0123456789abcdef0123456789abcdef0123456789abcdef012345"


def prod(claims: dict) -> dict[str, str]:
    return auth(claims, secret=SECRET)


def dev(claims: dict) -> dict[str, str]:
    return auth(claims, secret=DEV_SECRET)


def tenants_app(sqlite_url, apps: list[dict], **settings_fields):
    settings = load_settings(database_url=sqlite_url, apps=apps, **settings_fields)
    upgrade_to_head(sqlite_url)
    db = Database(sqlite_url)
    return create_app(settings, db=db, celery=create_celery(settings)).test_client(), db


@pytest.fixture
def tenants(sqlite_url, monkeypatch):
    """A deployment serving a production and a development app with overlapping user ids."""
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    client, db = tenants_app(
        sqlite_url,
        [
            {"api_key": PROD, "api_secrets": [SECRET]},
            {"api_key": DEV, "api_secrets": [DEV_SECRET]},
        ],
    )
    yield client
    db.dispose()


def test_a_dev_user_token_cannot_see_or_delete_prod_bobs_devices(tenants):
    assert register(tenants, prod({"user_id": "bob"}), BOB_TOKEN).status_code == 201
    dev_bob = dev({"user_id": "bob"})

    assert tokens_of(tenants, dev_bob) == []
    assert tenants.delete(f"/devices/{BOB_TOKEN}", headers=dev_bob).status_code == 404
    assert tokens_of(tenants, prod({"user_id": "bob"})) == [BOB_TOKEN]
    # Registering the same token in the dev app is the dev app's own registration.
    created = register(tenants, dev_bob, BOB_TOKEN)
    assert created.status_code == 201 and created.json["api_key"] == DEV
    assert tenants.delete(f"/devices/{BOB_TOKEN}", headers=dev_bob).status_code == 204
    listed = tenants.get("/devices", headers=prod({"user_id": "bob"})).json["devices"]
    assert [(d["token"], d["api_key"], d["disabled"]) for d in listed] == [(BOB_TOKEN, PROD, False)]


def test_a_dev_server_token_cannot_manage_prod_users(tenants):
    assert register(tenants, prod({"user_id": "bob"}), BOB_TOKEN).status_code == 201
    mute = {"call_pushes": "off", "user_id": "bob"}
    assert tenants.put("/preferences", json=mute, headers=prod({"server": True})).status_code == 200
    dev_server = dev({"server": True})

    assert tokens_of(tenants, dev_server, "?user_id=bob") == []
    assert tenants.delete(f"/devices/{BOB_TOKEN}", headers=dev_server).status_code == 404
    assert (
        tenants.delete(f"/devices/{BOB_TOKEN}?user_id=bob", headers=dev_server).status_code == 404
    )
    assert tenants.get("/preferences?user_id=bob", headers=dev_server).json["call_pushes"] == "on"
    unmute = {"call_pushes": "on", "user_id": "bob"}
    assert tenants.put("/preferences", json=unmute, headers=dev_server).status_code == 200

    # Production's bob is untouched: his device and his mute.
    prod_server = prod({"server": True})
    assert tokens_of(tenants, prod_server, "?user_id=bob") == [BOB_TOKEN]
    assert tenants.get("/preferences?user_id=bob", headers=prod_server).json["call_pushes"] == "off"


def test_naming_the_app_restricts_which_secrets_verify(tenants):
    token = prod({"user_id": "bob"})
    assert tenants.get("/devices?api_key=prod-key", headers=token).status_code == 200
    assert tenants.get("/devices", headers=token | {"X-Api-Key": PROD}).status_code == 200
    for wrong in ("/devices?api_key=dev-key", "/devices?api_key=unknown"):
        response = tenants.get(wrong, headers=token)
        assert response.status_code == 401, wrong
    assert tenants.get("/devices", headers=token | {"X-Api-Key": DEV}).status_code == 401
    clash = tenants.get("/devices?api_key=prod-key", headers=token | {"X-Api-Key": DEV})
    assert clash.status_code == 401 and "different apps" in clash.json["error"]
    empty = tenants.get("/devices?api_key=", headers=token)
    assert empty.status_code == 400 and empty.json["field"] == "api_key"


def test_a_secret_shared_by_two_apps_needs_the_app_named(sqlite_url, monkeypatch):
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    client, db = tenants_app(
        sqlite_url,
        [
            {"api_key": PROD, "api_secrets": [SECRET]},
            {"api_key": DEV, "api_secrets": [SECRET]},
        ],
    )
    try:
        token = prod({"user_id": "bob"})
        ambiguous = client.get("/devices", headers=token)
        assert ambiguous.status_code == 401 and "api_key" in ambiguous.json["error"]
        created = client.post(
            "/devices?api_key=dev-key",
            json={"token": BOB_TOKEN, "platform": "apns"},
            headers=token,
        )
        assert created.status_code == 201 and created.json["api_key"] == DEV
        assert tokens_of(client, token, "?api_key=prod-key") == []
    finally:
        db.dispose()


# --- device ownership ----------------------------------------------------------------------


def test_a_token_registered_by_another_user_moves_to_them(client):
    assert register(client, ALICE, voip=True).status_code == 201
    moved = register(client, BOB, voip=True)
    assert moved.status_code == 201 and moved.json["user_id"] == "bob"

    # Alice's registration is no longer hers: not listed, not hers to delete.
    assert tokens_of(client, ALICE) == []
    assert client.delete(f"/devices/{APNS_TOKEN}", headers=ALICE).status_code == 404
    assert tokens_of(client, BOB) == [APNS_TOKEN]
    listed = client.get("/devices", headers=BOB).json["devices"]
    assert listed[0]["disabled"] is False and "moved_to_user_id" not in listed[0]


def test_the_device_cap_evicts_the_oldest_registration(sqlite_url, monkeypatch):
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    client, db = tenants_app(
        sqlite_url, [{"api_key": API_KEY, "api_secrets": [SECRET]}], devices={"max_per_user": 2}
    )
    try:
        tokens = [f"{n:02x}" * 32 for n in range(3)]
        for token in tokens:
            time.sleep(0.01)  # distinct registration times
            assert register(client, ALICE, token).status_code == 201
        listed = {d["token"]: d for d in client.get("/devices", headers=ALICE).json["devices"]}
        assert set(listed) == set(tokens)
        assert [t for t in tokens if not listed[t]["disabled"]] == tokens[1:]
        evicted = listed[tokens[0]]
        assert evicted["disabled"] is True and evicted["disabled_at"].endswith("Z")
        assert "evicted" in evicted["disabled_reason"]
        assert "more than 2 devices" in evicted["disabled_reason"]
    finally:
        db.dispose()


# --- token formats, NUL and lone surrogates ------------------------------------------------


@pytest.mark.parametrize(
    ("platform", "token", "message"),
    [
        ("apns", "zz" * 32, "hexadecimal"),
        ("apns", "a" * 63, "even number"),
        ("apns", "ab" * 8, "32 to 200"),
        ("apns", "ab" * 101, "32 to 200"),
        ("apns", APNS_TOKEN + ":", "hexadecimal"),
        ("fcm", "x" * 31, "32 to 512"),
        ("fcm", "fcm/token+" * 10, "may only contain"),
        ("fcm", "fcm.token=" * 10, "may only contain"),
    ],
)
def test_malformed_tokens_are_400_naming_the_token(client, platform, token, message):
    response = client.post("/devices", json={"token": token, "platform": platform}, headers=ALICE)
    assert response.status_code == 400
    assert response.json["field"] == "token" and message in response.json["error"]
    assert tokens_of(client, ALICE) == []


@pytest.mark.parametrize(
    "token",
    [
        "0123abcd0123abcd0123abcd0123abcd",  # 16 bytes: the README's example
        "AB" * 32,  # upper-case hex
        "ab" * 100,  # 100 bytes: Apple may lengthen tokens
    ],
)
def test_well_formed_apns_tokens_are_accepted(client, token):
    assert register(client, ALICE, token).status_code == 201


def test_a_real_shaped_fcm_token_is_accepted(client):
    real = "dXyzAbC0123:APA91bH" + "-_AbCdEfGh0123456789" * 7 + "xYz"
    assert len(real) > 140
    assert register(client, ALICE, real, platform="fcm").status_code == 201


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"token": "ab\x00" * 22, "platform": "apns"}, "token"),
        ({"token": APNS_TOKEN, "platform": "apns\x00"}, "platform"),
        ({"token": APNS_TOKEN, "platform": "apns", "app_id": "com.example\x00"}, "app_id"),
        ({"token": APNS_TOKEN, "platform": "apns", "user_id": "alice\x00"}, "user_id"),
        ({"token": APNS_TOKEN, "platform": "apns", "app_id": ["\x00"]}, "app_id"),
        ({"token": APNS_TOKEN, "platform": "apns", "bad\x00key": 1}, "bad\\x00key"),
    ],
)
def test_nul_characters_in_bodies_are_400_naming_the_field(client, body, field):
    response = client.post("/devices", json=body, headers=ALICE)
    assert response.status_code == 400, response.json
    assert response.json["field"] == field and "NUL" in response.json["error"]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"token": "\\ud800", "platform": "apns"}', "token"),
        ('{"token": "ab", "platform": "apns", "app_id": "x\\udfff"}', "app_id"),
        ('{"token": "ab", "platform": "apns", "\\ud800": 1}', "\\ud800"),
    ],
)
def test_lone_surrogates_in_bodies_are_400_naming_the_field(client, raw, field):
    response = client.post(
        "/devices", data=raw, headers=ALICE | {"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.json
    assert response.json["field"] == field and "surrogate" in response.json["error"]


def test_nul_in_preferences_and_query_strings_is_400_naming_the_field(client):
    server = SERVER
    body = {"call_pushes": "off", "until": "2099-01-01T00:00:00Z\x00"}
    response = client.put("/preferences", json=body, headers=ALICE)
    assert response.status_code == 400 and response.json["field"] == "until"
    for method, path, field in [
        ("get", "/devices?user_id=bob%00", "user_id"),
        ("get", "/preferences?user_id=%00", "user_id"),
        ("delete", f"/devices/{APNS_TOKEN}?user_id=a%00", "user_id"),
        ("delete", "/devices/ab%00cd", "token"),
        ("get", "/devices?user_id=bob&x%00=1", "x\\x00"),
    ]:
        response = getattr(client, method)(path, headers=server)
        assert response.status_code == 400, (path, response.json)
        assert response.json["field"] == field, path


def test_a_user_id_claim_with_nul_is_401(client):
    response = client.get("/devices", headers=auth({"user_id": "bob\x00"}))
    assert response.status_code == 401 and "NUL" in response.json["error"]

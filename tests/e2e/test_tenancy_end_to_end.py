"""Two Stream apps (development and production) served by one deployment, with the same user
ids, through the real processes: `callpush web` (gunicorn) and `callpush worker` on PostgreSQL
and Redis, devices registered over HTTP with each app's Stream tokens, rings as real signed
webhooks, pushes counted at the fake APNs and FCM.

The attack this guards against: a development app's token or webhook reaching production's
users (before, a dev-app ring rang every one of production bob's phones).
"""

from __future__ import annotations

import json
import time

import jwt
import pytest
import requests
from sqlalchemy import create_engine, text

from tests.e2e.processes import free_port, provider_env, run_cli, running, wait_until
from worker.stream import samples as sample_events

pytestmark = pytest.mark.timeout(240)

PROD, DEV = "prod-key", "dev-key"
PROD_SECRET = "prod-secret-0123456789abcdef0123456789abcdef"
DEV_SECRET = "dev-secret-0123456789abcdef0123456789abcdef0"
PROD_VOIP = "a1" * 32
PROD_FCM = "prodBobPixel:APA91b" + "P" * 130
DEV_VOIP = "d1" * 32


def stream_token(claims: dict, secret: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + jwt.encode(claims, secret, algorithm="HS256")}


class Deployment:
    def __init__(self, port: int, database_url: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.engine = create_engine(database_url)

    def register(self, headers: dict[str, str], token: str, platform: str, **fields) -> dict:
        response = requests.post(
            f"{self.base}/devices",
            json={"token": token, "platform": platform, **fields},
            headers=headers,
            timeout=10,
        )
        assert response.status_code == 201, response.text
        return response.json()

    def ring(self, api_key: str, secret: str, callees: list[str]) -> str:
        event = sample_events.ring_event("alice", callees)
        body, headers = sample_events.signed_request(event, api_key=api_key, secret=secret)
        response = requests.post(
            f"{self.base}/webhooks/stream", data=body, headers=headers, timeout=10
        )
        assert response.status_code == 202, response.text
        call_cid = event["call_cid"]
        wait_until(lambda: self.status(call_cid) == "processed", 60, message=f"{call_cid} done")
        return call_cid

    def status(self, call_cid: str) -> str | None:
        with self.engine.connect() as connection:
            return connection.scalar(
                text("SELECT status FROM webhook_events WHERE call_cid = :cid"), {"cid": call_cid}
            )


def pushed_calls(fake_apns, fake_fcm) -> list[tuple[str, str]]:
    """(token, call cid) of every push the fakes received."""
    apns = [(r["token"], r["payload"]["stream"]["call_cid"]) for r in fake_apns.received]
    fcm = [(r["message"]["token"], r["message"]["data"]["call_cid"]) for r in fake_fcm.received]
    return apns + fcm


@pytest.mark.services
def test_a_dev_app_never_reaches_production_users(
    tmp_path, postgres_url, redis_url, fake_apns, apns_settings, fake_fcm, fcm_settings
):
    port = free_port()
    env = provider_env(apns_settings, fcm_settings) | {
        "CALLPUSH_DATABASE_URL": postgres_url,
        "CALLPUSH_BROKER_URL": redis_url,
        "CALLPUSH_APPS": json.dumps(
            [
                {"api_key": PROD, "api_secrets": [PROD_SECRET]},
                {"api_key": DEV, "api_secrets": [DEV_SECRET]},
            ]
        ),
    }
    run_cli(["db", "upgrade"], env, tmp_path)
    web = ["web", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    worker = ["worker", "--queues", "ring,bulk", "--concurrency", "2"]
    with (
        running(web, env, tmp_path, "web", wait_port=port),
        running(worker, env, tmp_path, "worker"),
    ):
        site = Deployment(port, postgres_url)
        prod_bob = stream_token({"user_id": "bob"}, PROD_SECRET)
        dev_bob = stream_token({"user_id": "bob"}, DEV_SECRET)
        site.register(prod_bob, PROD_VOIP, "apns", voip=True)
        site.register(prod_bob, PROD_FCM, "fcm")
        site.register(dev_bob, DEV_VOIP, "apns", voip=True)

        # The dev app's bob token sees and deletes only the dev app's bob's devices.
        listed = requests.get(f"{site.base}/devices", headers=dev_bob, timeout=10).json()
        assert [d["token"] for d in listed["devices"]] == [DEV_VOIP]
        for token in (PROD_VOIP, PROD_FCM):
            gone = requests.delete(f"{site.base}/devices/{token}", headers=dev_bob, timeout=10)
            assert gone.status_code == 404
        dev_server = stream_token({"server": True}, DEV_SECRET)
        theirs = requests.get(
            f"{site.base}/devices?user_id=bob", headers=dev_server, timeout=10
        ).json()
        assert [d["token"] for d in theirs["devices"]] == [DEV_VOIP]

        # A ring signed by the dev app rings the dev app's bob only.
        dev_call = site.ring(DEV, DEV_SECRET, ["bob"])
        wait_until(lambda: fake_apns.count >= 1, 30, message="the dev push")
        time.sleep(0.5)  # anything else the ring would have sent has arrived by now
        assert pushed_calls(fake_apns, fake_fcm) == [(DEV_VOIP, dev_call)]

        # Production's ring rings production's bob, both phones.
        prod_call = site.ring(PROD, PROD_SECRET, ["bob"])
        wait_until(lambda: len(pushed_calls(fake_apns, fake_fcm)) >= 3, 30, message="prod")
        assert sorted(pushed_calls(fake_apns, fake_fcm)) == sorted(
            [(DEV_VOIP, dev_call), (PROD_VOIP, prod_call), (PROD_FCM, prod_call)]
        )

        # Muting bob in the dev app leaves production's bob ringing.
        mute = requests.put(
            f"{site.base}/preferences",
            json={"call_pushes": "off", "user_id": "bob"},
            headers=dev_server,
            timeout=10,
        )
        assert mute.status_code == 200
        site.ring(DEV, DEV_SECRET, ["bob"])
        muted_prod_call = site.ring(PROD, PROD_SECRET, ["bob"])
        wait_until(lambda: len(pushed_calls(fake_apns, fake_fcm)) >= 5, 30, message="prod again")
        time.sleep(0.5)
        assert len(pushed_calls(fake_apns, fake_fcm)) == 5
        assert {t for t, c in pushed_calls(fake_apns, fake_fcm) if c == muted_prod_call} == {
            PROD_VOIP,
            PROD_FCM,
        }

        # Bob's Android phone logs in as carol: bob's rings no longer reach it, carol's do.
        site.register(stream_token({"user_id": "carol"}, PROD_SECRET), PROD_FCM, "fcm")
        after_move = site.ring(PROD, PROD_SECRET, ["bob"])
        carols = site.ring(PROD, PROD_SECRET, ["carol"])
        wait_until(lambda: len(pushed_calls(fake_apns, fake_fcm)) >= 7, 30, message="moved")
        time.sleep(0.5)
        pushes = pushed_calls(fake_apns, fake_fcm)
        assert [t for t, c in pushes if c == after_move] == [PROD_VOIP]
        assert [t for t, c in pushes if c == carols] == [PROD_FCM]

    # The operator sees the move.
    listed = run_cli(["devices", "list", "--app", PROD, "--user", "bob"], env, tmp_path).stdout
    (fcm_line,) = [line for line in listed.splitlines() if " fcm " in line]
    assert "moved to another user at " in fcm_line and "now carol's" in fcm_line
    trace = run_cli(["trace", after_move, "--app", PROD], env, tmp_path).stdout
    pushes = [line for line in trace.splitlines() if " -> #" in line]
    assert len(pushes) == 1 and ": bob apns voip " in pushes[0], trace


@pytest.mark.timeout(120)
def test_callpush_run_upgrades_an_old_sqlite_file_and_rings_its_devices(
    tmp_path, fake_apns, apns_settings, fake_fcm, fcm_settings
):
    """A laptop's callpush.db from before apps were tenants, no app configured: `callpush run`
    migrates it (the devices go to the development app it serves) and rings them."""
    from alembic import command

    from worker.foundation.settings import DEV_API_KEY, DEV_API_SECRET
    from worker.storage.migrations import alembic_config

    url = f"sqlite:///{tmp_path / 'callpush.db'}"
    command.upgrade(alembic_config(url), "0001")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO devices (user_id, platform, token, voip, source, created_at)"
                " VALUES ('bob', 'apns', :token, 1, 'local', '2026-01-01 00:00:00.000000')"
            ),
            {"token": PROD_VOIP},
        )
    engine.dispose()
    port = free_port()
    env = provider_env(apns_settings, fcm_settings) | {"CALLPUSH_DATABASE_URL": url}
    with running(["run", "--port", str(port)], env, tmp_path, "run", wait_port=port):
        event = sample_events.ring_event("alice", ["bob"])
        body, headers = sample_events.signed_request(
            event, api_key=DEV_API_KEY, secret=DEV_API_SECRET
        )
        response = requests.post(
            f"http://127.0.0.1:{port}/webhooks/stream", data=body, headers=headers, timeout=10
        )
        assert response.status_code == 202, response.text
        wait_until(lambda: fake_apns.count >= 1, 30, message="the ring")
    assert fake_apns.tokens() == [PROD_VOIP]

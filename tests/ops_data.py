"""Seeding the inbox and delivery records directly, for the tests of the operations tools (event
log, replay, retention, admin API, dashboard): a known world with known times."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from worker.storage import deliveries
from worker.storage.database import Database
from worker.storage.models import Delivery, Device, FanoutChunk, WebhookEvent

API_KEY = "ops-key"
SECRET = "ops-secret-0123456789abcdef0123456789abcdef"
# The seeding clock for parametrised tests (fixed at import, so filters computed at collection
# agree with the seeded times); fixtures that compare with the real clock use ``now()``.
NOW = datetime.now(UTC)


def now() -> datetime:
    return datetime.now(UTC)


def ring_body(call_cid: str, caller: str, callees: list[str], *, timeout_ms: int = 30_000) -> dict:
    call_type, call_id = call_cid.split(":", 1)
    return {
        "type": "call.ring",
        "created_at": time.time_ns(),
        "call_cid": call_cid,
        "user": {"id": caller, "name": caller.capitalize()},
        "members": [{"user_id": c, "user": {"id": c, "name": c.capitalize()}} for c in callees],
        "call": {
            "type": call_type,
            "id": call_id,
            "cid": call_cid,
            "created_by": {"id": caller, "name": caller.capitalize()},
            "custom": {},
            "settings": {
                "ring": {
                    "incoming_call_timeout_ms": timeout_ms,
                    "auto_cancel_timeout_ms": timeout_ms,
                }
            },
            "session": {"id": "s1", "accepted_by": {}, "rejected_by": {}},
        },
    }


def notification_body(call_cid: str, sender: str, members: list[str]) -> dict:
    call_type, call_id = call_cid.split(":", 1)
    return {
        "type": "call.notification",
        "created_at": time.time_ns(),
        "call_cid": call_cid,
        "user": {"id": sender, "name": sender.capitalize()},
        "members": [{"user_id": m, "user": {"id": m, "name": m.capitalize()}} for m in members],
        "call": {
            "type": call_type,
            "id": call_id,
            "cid": call_cid,
            "created_by": {"id": sender, "name": sender.capitalize()},
            "custom": {},
        },
    }


def stop_body(event_type: str, call_cid: str, user_id: str) -> dict:
    call_type, call_id = call_cid.split(":", 1)
    return {
        "type": event_type,
        "created_at": time.time_ns(),
        "call_cid": call_cid,
        "user": {"id": user_id},
        "call": {"type": call_type, "id": call_id, "cid": call_cid, "custom": {}},
    }


@dataclass
class Seeder:
    db: Database

    def device(
        self,
        user_id: str,
        platform: str,
        token: str,
        *,
        voip: bool = False,
        api_key: str = API_KEY,
        **fields: Any,
    ) -> int:
        with self.db.transaction() as session:
            device = Device(
                api_key=api_key,
                user_id=user_id,
                platform=platform,
                token=token,
                voip=voip,
                **fields,
            )
            session.add(device)
            session.flush()
            return device.id

    def event(
        self,
        body: dict,
        *,
        status: str = "processed",
        reason: str | None = None,
        received_at: datetime | None = None,
        processed_at: datetime | None = None,
        webhook_id: str | None = None,
        api_key: str = API_KEY,
    ) -> int:
        received = received_at or now()
        with self.db.transaction() as session:
            row = WebhookEvent(
                webhook_id=webhook_id or str(uuid.uuid4()),
                api_key=api_key,
                event_type=body["type"],
                call_cid=body.get("call_cid"),
                body=json.dumps(body),
                status=status,
                status_reason=reason,
                received_at=received,
                processed_at=processed_at
                or (received + timedelta(milliseconds=80) if status != "received" else None),
            )
            session.add(row)
            session.flush()
            return row.id

    def delivery(
        self,
        event_id: int,
        device_id: int,
        status: str,
        *,
        user_id: str,
        platform: str = "apns",
        kind: str = "voip",
        token_hint: str = "abcdef…1234",
        reason: str | None = None,
        status_code: int | None = None,
        created_at: datetime | None = None,
        latency_ms: float | None = 42.0,
    ) -> int:
        created = created_at or now()
        with self.db.transaction() as session:
            row = Delivery(
                event_id=event_id,
                device_id=device_id,
                user_id=user_id,
                platform=platform,
                kind=kind,
                token_hint=token_hint,
                provider=platform,
                status=status,
                reason=reason,
                status_code=status_code,
                attempts=1,
                created_at=created,
                claimed_at=created,
                finished_at=created + timedelta(milliseconds=latency_ms or 0),
                latency_ms=latency_ms,
            )
            session.add(row)
            session.flush()
            return row.id

    def skipped_recipient(self, event_id: int, user_id: str, reason: str) -> None:
        """A recipient who got no push, recorded as processing records one."""
        with self.db.transaction() as session:
            deliveries.record_skipped_recipients(session, event_id, {user_id: reason}, [user_id])

    def chunk(self, event_id: int, index: int, recipients: list[tuple[str, str]]) -> None:
        with self.db.transaction() as session:
            session.add(
                FanoutChunk(
                    event_id=event_id,
                    chunk_index=index,
                    recipients=json.dumps([list(r) for r in recipients]),
                    status="done",
                    attempts=1,
                )
            )


ADMIN_TOKEN = "ops-admin-token-0123456789abcdef"


def ops_app(settings: Any, db: Database, celery: Any, admin_token: str | None = ADMIN_TOKEN):
    """The real app with the operations blueprints, until create_app registers them itself."""
    from webhook_app import admin_api, create_app, dashboard, openapi

    app = create_app(settings, db=db, celery=celery)
    for blueprint in (admin_api.blueprint, dashboard.blueprint, openapi.blueprint):
        if blueprint.name not in app.blueprints:
            app.register_blueprint(blueprint)
    app.config["CALLPUSH_ADMIN_TOKEN"] = admin_token
    return app

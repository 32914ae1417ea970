"""Well-formed sample Stream events (stream-protocol.md §2.5), for `callpush simulate` and the
benchmarks: a newcomer can ring a phone without a Stream account."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from worker.stream.signature import expected_signature


def _user(user_id: str) -> dict[str, Any]:
    return {"id": user_id, "name": user_id.capitalize(), "role": "user", "custom": {}}


def ring_event(
    caller: str,
    callees: list[str],
    *,
    video: bool = True,
    call_type: str = "default",
    call_id: str | None = None,
    ring_timeout_ms: int = 30_000,
    display_name: str = "",
) -> dict[str, Any]:
    call_id = call_id or uuid.uuid4().hex
    cid = f"{call_type}:{call_id}"
    session_id = str(uuid.uuid4())
    return {
        "type": "call.ring",
        "created_at": time.time_ns(),
        "call_cid": cid,
        "session_id": session_id,
        "video": video,
        "user": _user(caller),
        "members": [
            {"user_id": callee, "user": _user(callee), "role": "call_member", "custom": {}}
            for callee in callees
        ],
        "call": {
            "type": call_type,
            "id": call_id,
            "cid": cid,
            "current_session_id": session_id,
            "created_by": _user(caller),
            "custom": {"display_name": display_name} if display_name else {},
            "settings": {
                "ring": {
                    "incoming_call_timeout_ms": ring_timeout_ms,
                    "auto_cancel_timeout_ms": ring_timeout_ms,
                    "missed_call_timeout_ms": ring_timeout_ms,
                }
            },
            "session": {"id": session_id, "accepted_by": {}, "rejected_by": {}, "missed_by": {}},
        },
    }


def member_event(
    event_type: str,
    sender: str | None,
    members: list[str],
    *,
    call_type: str = "default",
    call_id: str | None = None,
    created_by: str | None = None,
    participants: list[str] | None = None,
    display_name: str = "",
) -> dict[str, Any]:
    """A call.notification / call.missed (members listed) or call.session_started /
    call.live_started (no members: the worker asks Stream's API) event."""
    call_id = call_id or uuid.uuid4().hex
    cid = f"{call_type}:{call_id}"
    creator = created_by or sender or "host"
    event: dict[str, Any] = {
        "type": event_type,
        "created_at": time.time_ns(),
        "call_cid": cid,
        "session_id": str(uuid.uuid4()),
        "call": {
            "type": call_type,
            "id": call_id,
            "cid": cid,
            "created_by": _user(creator),
            "custom": {"display_name": display_name} if display_name else {},
            "session": {
                "participants": [{"user": _user(p), "role": "user"} for p in participants or []],
                "accepted_by": {},
                "rejected_by": {},
            },
        },
    }
    if sender:
        event["user"] = _user(sender)
    if members:
        event["members"] = [
            {"user_id": m, "user": _user(m), "role": "call_member", "custom": {}} for m in members
        ]
    return event


def call_event(event_type: str, call_cid: str, user_id: str | None = None) -> dict[str, Any]:
    """A minimal call.accepted / call.rejected / call.ended / … event."""
    call_type, call_id = call_cid.split(":", 1)
    event: dict[str, Any] = {
        "type": event_type,
        "created_at": time.time_ns(),
        "call_cid": call_cid,
        "call": {"type": call_type, "id": call_id, "cid": call_cid, "custom": {}},
    }
    if user_id:
        event["user"] = _user(user_id)
    return event


def signed_request(
    event: dict[str, Any], *, api_key: str, secret: str, webhook_id: str | None = None
) -> tuple[bytes, dict[str, str]]:
    """The body and headers Stream would send for ``event``."""
    body = json.dumps(event, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Api-Key": api_key,
        "X-Signature": expected_signature(body, secret),
        "X-Webhook-Id": webhook_id or str(uuid.uuid4()),
        "X-Webhook-Attempt": "1",
    }
    return body, headers

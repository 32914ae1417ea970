"""Stream Video webhook events, read from the raw JSON dict (stream-protocol.md §2).

We parse the dict ourselves rather than with the getstream SDK's typed parser, because that parser
rejects RFC 3339 timestamps (§2.1) and production payloads may use either form.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

RING = "call.ring"
NOTIFICATION = "call.notification"
MISSED = "call.missed"
SESSION_STARTED = "call.session_started"
LIVE_STARTED = "call.live_started"
ACCEPTED = "call.accepted"
REJECTED = "call.rejected"
ENDED = "call.ended"
SESSION_ENDED = "call.session_ended"

# Events after which no ring push for the call may go out (stream-protocol.md §3.7, §6).
RING_STOPPERS = frozenset({ACCEPTED, REJECTED, ENDED, SESSION_ENDED, LIVE_STARTED})


class InvalidEvent(ValueError):
    """The JSON is not a Stream event we can act on."""


def parse_timestamp(value: Any) -> datetime | None:
    """Unix-nanosecond integers (SDK fixtures) and RFC 3339 strings (API JSON) both occur."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InvalidEvent(f"timestamp is a boolean: {value!r}")
    if isinstance(value, int | float):
        return _from_unix(float(value))
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return _from_unix(float(text))
        return _from_rfc3339(text)
    raise InvalidEvent(f"timestamp of type {type(value).__name__}")


def _from_unix(number: float) -> datetime:
    # Stream sends nanoseconds; accept µs, ms and s too, told apart by magnitude (a date after
    # 1973 in seconds is below 1e11, and in ns above 1e17).
    if abs(number) >= 1e17:
        seconds = number / 1e9
    elif abs(number) >= 1e14:
        seconds = number / 1e6
    elif abs(number) >= 1e11:
        seconds = number / 1e3
    else:
        seconds = number
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError) as error:
        raise InvalidEvent(f"timestamp out of range: {number!r}") from error


def _from_rfc3339(text: str) -> datetime:
    # Python before 3.11 could not take 'Z'; none takes more than 6 fractional digits, and Stream
    # sends 9 (e.g. "2024-10-16T04:15:01.911604755Z").
    normalised = text.replace("z", "Z")
    if normalised.endswith("Z"):
        normalised = normalised[:-1] + "+00:00"
    date_part, sep, rest = normalised.partition(".")
    if sep:
        digits = "".join(ch for ch in rest if ch.isdigit())
        zone = rest[len(digits) :]
        normalised = f"{date_part}.{digits[:6]}{zone}"
    try:
        parsed = datetime.fromisoformat(normalised)
    except ValueError as error:
        raise InvalidEvent(f"not an RFC 3339 timestamp: {text[:40]!r}") from error
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str:
    """A string field, or "".  JSON may carry lone UTF-16 surrogates ("\\ud800"), which no
    database or push provider can encode: they become U+FFFD."""
    if not isinstance(value, str):
        return ""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def user_display_name(user: Mapping[str, Any]) -> str:
    """Stream's "always populated" display name: the name, else the id."""
    return _text(user.get("name")).strip() or _text(user.get("id"))


def call_display_name(call: Mapping[str, Any]) -> str:
    """First of custom.display_name / name / title, else "" (stream-protocol.md §3.1)."""
    custom = _mapping(call.get("custom"))
    for key in ("display_name", "name", "title"):
        name = _text(custom.get(key)).strip()
        if name:
            return name
    return ""


@dataclass(frozen=True, slots=True)
class Member:
    user_id: str
    display_name: str


@dataclass(frozen=True, slots=True)
class CallEvent:
    """What the worker needs of one call event."""

    type: str
    call_cid: str
    session_id: str | None
    created_at: datetime | None
    actor_id: str | None  # event.user: the caller / sender / accepter
    actor_name: str
    created_by_id: str
    created_by_name: str
    call_name: str
    video: bool
    members: tuple[Member, ...]
    accepted_by: frozenset[str]
    rejected_by: frozenset[str]
    participants: frozenset[str]  # users already in the call's session
    ring_timeout_ms: int | None
    ended: bool
    raw: Mapping[str, Any] = field(repr=False)

    @property
    def call_type(self) -> str:
        return self.call_cid.split(":", 1)[0]


def parse_event_type(body: Any) -> str:
    if not isinstance(body, Mapping):
        raise InvalidEvent("the body is not a JSON object")
    event_type = body.get("type")
    if not isinstance(event_type, str) or not event_type.strip():
        raise InvalidEvent("the event has no 'type'")
    if _text(event_type) != event_type:
        raise InvalidEvent("'type' is not valid Unicode")
    return event_type


def parse_call_event(body: Mapping[str, Any]) -> CallEvent:
    event_type = parse_event_type(body)
    call = _mapping(body.get("call"))
    call_cid = _text(body.get("call_cid")) or _text(call.get("cid"))
    if ":" not in call_cid or "\ufffd" in call_cid:
        raise InvalidEvent("the event has no valid 'call_cid'")
    user = _mapping(body.get("user"))
    created_by = _mapping(call.get("created_by"))
    session = _mapping(call.get("session"))
    members = tuple(_members(body.get("members")))
    return CallEvent(
        type=event_type,
        call_cid=call_cid,
        session_id=_text(body.get("session_id")) or _text(session.get("id")) or None,
        created_at=parse_timestamp(body.get("created_at")),
        actor_id=_text(user.get("id")) or None,
        actor_name=user_display_name(user),
        created_by_id=_text(created_by.get("id")) or _text(user.get("id")),
        created_by_name=user_display_name(created_by) or user_display_name(user),
        call_name=call_display_name(call),
        video=_video_flag(body, call),
        members=members,
        accepted_by=frozenset(_mapping(session.get("accepted_by"))),
        rejected_by=frozenset(_mapping(session.get("rejected_by"))),
        participants=frozenset(_participants(session.get("participants"))),
        ring_timeout_ms=_ring_timeout_ms(call),
        ended=bool(call.get("ended_at")) or bool(session.get("ended_at")),
        raw=body,
    )


def _members(value: Any) -> list[Member]:
    if not isinstance(value, list):
        return []
    seen: set[str] = set()
    members = []
    for item in value:
        entry = _mapping(item)
        user = _mapping(entry.get("user"))
        user_id = _text(entry.get("user_id")) or _text(user.get("id"))
        if user_id and user_id not in seen:
            seen.add(user_id)
            members.append(Member(user_id, user_display_name(user) or user_id))
    return members


def _participants(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    ids = []
    for item in value:
        entry = _mapping(item)
        user_id = _text(_mapping(entry.get("user")).get("id")) or _text(entry.get("user_id"))
        if user_id:
            ids.append(user_id)
    return ids


def _video_flag(body: Mapping[str, Any], call: Mapping[str, Any]) -> bool:
    video = body.get("video")
    if isinstance(video, bool):
        return video
    if isinstance(video, str):
        return video.lower() == "true"
    settings = _mapping(_mapping(call.get("settings")).get("video"))
    return bool(settings.get("enabled", False))


def _ring_timeout_ms(call: Mapping[str, Any]) -> int | None:
    """How long a callee's phone rings: the shorter of the callee's own timeout and the caller's
    auto-cancel (stream-protocol.md §5; both enforced by the SDKs, 0 = none)."""
    ring = _mapping(_mapping(call.get("settings")).get("ring"))
    values = []
    for key in ("incoming_call_timeout_ms", "auto_cancel_timeout_ms"):
        value = ring.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            values.append(value)
    return min(values) if values else None


def parse_stored_body(body: str) -> CallEvent:
    """A call event from the JSON text the inbox holds."""
    try:
        document = json.loads(body)
    except ValueError as error:
        raise InvalidEvent(f"not JSON: {error}") from error
    return parse_call_event(document)

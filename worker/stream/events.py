"""Stream Video webhook events, read from the raw JSON dict (stream-protocol.md §2).

We parse the dict ourselves rather than with the getstream SDK's typed parser, because that parser
rejects RFC 3339 timestamps (§2.1) and production payloads may use either form.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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


# The inbox's column sizes (worker/storage/models.py): a call id that does not fit cannot be
# Stream's (its ids are at most 64 characters), a session id is a UUID, a user id at most 255.
MAX_CALL_CID = 255
MAX_SESSION_ID = 128
MAX_USER_ID = 255
# Stream's ring timeouts are int32 milliseconds (RingSettingsRequest in
# https://github.com/GetStream/protocol/blob/main/openapi/v2/video-serverside-api.yaml): a
# larger value cannot be Stream's, and 10^20 overflowed every deadline computed from it.
MAX_RING_TIMEOUT_MS = 2**31 - 1


# Integers in ASCII digits only: str.isdigit() and int() also accept other scripts' digits
# ("²", "١٢"), which no timestamp uses.
_UNIX_DIGITS = re.compile(r"-?[0-9]{1,30}")
# RFC 3339 (https://www.rfc-editor.org/rfc/rfc3339#section-5.6) with any number of fractional
# digits: Stream sends nanoseconds ("2024-10-16T04:15:01.911604755Z"), Python takes at most 6.
_RFC3339 = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ](?P<time>[0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?:\.(?P<fraction>[0-9]+))?(?P<zone>[Zz]|[+-][0-9]{2}:[0-9]{2})?"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# NUL and lone surrogates (json.loads decodes a valid pair into one character).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def parse_timestamp(value: Any) -> datetime | None:
    """Unix-nanosecond integers (SDK fixtures) and RFC 3339 strings (API JSON) both occur.
    Anything else, or a time no datetime can hold, raises InvalidEvent."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InvalidEvent(f"timestamp is a boolean: {value!r}")
    if isinstance(value, int):
        return _from_unix(value)
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) >= 1e30:
            raise InvalidEvent("timestamp out of range")
        return _from_unix(int(value))
    if isinstance(value, str):
        text = value.strip()
        if _UNIX_DIGITS.fullmatch(text):
            return _from_unix(int(text))
        return _from_rfc3339(text)
    raise InvalidEvent(f"timestamp of type {type(value).__name__}")


def _from_unix(number: int) -> datetime:
    # Stream sends nanoseconds; accept µs, ms and s too, told apart by magnitude (a date after
    # 1973 in seconds is below 1e11, and in ns above 1e17).  Integer arithmetic throughout: a
    # float cannot even hold an integer above ~1.8e308.
    magnitude = abs(number)
    if magnitude >= 10**30:
        raise InvalidEvent("timestamp out of range")
    if magnitude >= 10**17:
        micros = number // 1000
    elif magnitude >= 10**14:
        micros = number
    elif magnitude >= 10**11:
        micros = number * 1000
    else:
        micros = number * 1_000_000
    try:
        return _EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        raise InvalidEvent("timestamp out of range") from None


def _from_rfc3339(text: str) -> datetime:
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise InvalidEvent(f"not an RFC 3339 timestamp: {_quoted(text)}")
    fraction = match["fraction"]
    zone = match["zone"] or "+00:00"  # no offset: UTC
    normalised = (
        f"{match['date']}T{match['time']}"
        + (f".{fraction[:6].ljust(6, '0')}" if fraction else "")
        + ("+00:00" if zone in ("Z", "z") else zone)
    )
    try:
        # Year 1 at +01:00, or 9999-12-31T23:59 at -01:00, is a valid string but no UTC datetime.
        return datetime.fromisoformat(normalised).astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidEvent(f"not a valid time: {_quoted(text)}") from None


def _quoted(text: str) -> str:
    return repr(_text(text)[:40])


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str:
    """A string field, or "".  JSON may carry lone UTF-16 surrogates ("\\ud800"), which no
    database or push provider can encode, and NUL ("\\u0000"), which PostgreSQL's text
    refuses: each becomes U+FFFD."""
    if not isinstance(value, str):
        return ""
    if value.isascii() and "\x00" not in value:
        return value
    return _UNSTORABLE.sub("\ufffd", value)


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
    user = _mapping(body.get("user"))
    created_by = _mapping(call.get("created_by"))
    session = _mapping(call.get("session"))
    members = tuple(_members(body.get("members")))
    return CallEvent(
        type=event_type,
        call_cid=_call_cid(body, call),
        session_id=_session_id(body, session),
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


@dataclass(frozen=True, slots=True)
class CallFields:
    """The identifiers the inbox stores for an event, each read on its own: what can be read of
    an event that cannot be acted on still lets an operator find it (`callpush trace`)."""

    call_cid: str | None
    session_id: str | None
    created_at: datetime | None


def read_call_fields(body: Mapping[str, Any]) -> CallFields:
    """Never raises: a field that is missing or unreadable is None."""
    call = _mapping(body.get("call"))
    call_cid: str | None
    created_at: datetime | None
    try:
        call_cid = _call_cid(body, call)
    except InvalidEvent:
        call_cid = None
    try:
        created_at = parse_timestamp(body.get("created_at"))
    except InvalidEvent:
        created_at = None
    return CallFields(call_cid, _session_id(body, _mapping(call.get("session"))), created_at)


def _call_cid(body: Mapping[str, Any], call: Mapping[str, Any]) -> str:
    call_cid = _text(body.get("call_cid")) or _text(call.get("cid"))
    if ":" not in call_cid or "\ufffd" in call_cid:
        raise InvalidEvent("the event has no valid 'call_cid'")
    if len(call_cid) > MAX_CALL_CID:
        raise InvalidEvent(f"'call_cid' is longer than {MAX_CALL_CID} characters")
    return call_cid


def _session_id(body: Mapping[str, Any], session: Mapping[str, Any]) -> str | None:
    # Cut to the column's size, so the stored id and the parsed one still compare equal.
    found = _text(body.get("session_id")) or _text(session.get("id"))
    return found[:MAX_SESSION_ID] or None


def _members(value: Any) -> list[Member]:
    if not isinstance(value, list):
        return []
    seen: set[str] = set()
    members = []
    for item in value:
        entry = _mapping(item)
        user = _mapping(entry.get("user"))
        user_id = _text(entry.get("user_id")) or _text(user.get("id"))
        # An id longer than any stored one has no device: nobody to push to.
        if user_id and len(user_id) <= MAX_USER_ID and user_id not in seen:
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
    auto-cancel (both enforced by the SDKs, 0 = none); a value outside Stream's range is
    clamped to it."""
    ring = _mapping(_mapping(call.get("settings")).get("ring"))
    values = []
    for key in ("incoming_call_timeout_ms", "auto_cancel_timeout_ms"):
        value = ring.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            values.append(min(value, MAX_RING_TIMEOUT_MS))
    return min(values) if values else None


def parse_stored_body(body: str) -> CallEvent:
    """A call event from the JSON text the inbox holds."""
    try:
        document = json.loads(body)
    except ValueError as error:
        raise InvalidEvent(f"not JSON: {error}") from error
    return parse_call_event(document)

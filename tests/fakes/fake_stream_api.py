"""A fake of Stream's server-side REST API (Flask, werkzeug, in a thread).

  POST /api/v2/video/call/members  QueryCallMembers (stream-protocol.md §4.4): body {type, id,
                                   limit (0..100, default 25), next?} -> {members, next?,
                                   duration}; ``next`` is an opaque cursor, absent on the last
                                   page.  An unknown call has no members.
  GET  /api/v2/devices?user_id=    ListDevices (§4.3) -> {devices, duration}.
  GET  /api/v2/video/calltypes     ListCallTypes -> {call_types: {name: CallTypeResponse},
                                   duration}.
  GET  /api/v2/video/calltypes/<name>
                                   GetCallType -> CallTypeResponse + duration; 404 with
                                   Stream's error body for a call type it does not have.

Every request must carry what a Stream server-side client sends (§4.5): ``api_key`` as a query
parameter, ``stream-auth-type: jwt`` and ``Authorization: <JWT>`` (no "Bearer "), an HS256 token
signed with the app secret and without ``user_id`` (that would be a user token).  Otherwise the
answer is 401 with Stream's error body.

Knobs: ``fail_next(n, status, retry_after=...)`` answers the next n requests with an error;
``outage = True`` answers every request 503 until it is set back; ``delay`` sleeps before
answering; ``repeat_cursor`` makes the members endpoint hand back the same ``next`` forever;
``set_call_type(name, notification_settings(...))`` / ``remove_call_type(name)`` change the call
types (Stream starts with ``default``, every event on, no templates).  ``calls`` counts
requests per endpoint (``MEMBERS`` / ``DEVICES`` / ``CALL_TYPES`` / ``CALL_TYPE``),
``requests`` records each one (method, path, query, headers, JSON body).
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import jwt
from flask import Flask, Response, jsonify, request
from werkzeug.serving import WSGIRequestHandler, make_server

MEMBERS = "query_call_members"
DEVICES = "list_devices"
CALL_TYPES = "list_call_types"
CALL_TYPE = "get_call_type"
# NotificationSettings' per-event keys (GetStream/stream-py getstream/models NotificationSettings).
NOTIFICATION_EVENTS = (
    "call_ring",
    "call_notification",
    "call_missed",
    "call_live_started",
    "session_started",
)
DEFAULT_LIMIT = 25
MAX_LIMIT = 100


def member(user_id: str, name: str | None = None, role: str = "call_member") -> dict[str, Any]:
    """A ``MemberResponse`` as Stream returns it."""
    return {
        "user_id": user_id,
        "user": {"id": user_id, "name": name if name is not None else user_id.title()},
        "role": role,
        "custom": {},
        "created_at": "2026-01-01T10:00:00.000000001Z",
        "updated_at": "2026-01-01T10:00:00.000000001Z",
    }


def device(
    token: str,
    push_provider: str = "apn",
    *,
    user_id: str = "",
    voip: bool = False,
    disabled: bool = False,
    hardware_id: str | None = None,
    push_provider_name: str | None = None,
) -> dict[str, Any]:
    """A ``DeviceResponse`` (§4.3); optional fields are left out when unset, as Stream does."""
    body: dict[str, Any] = {
        "id": token,
        "push_provider": push_provider,
        "user_id": user_id,
        "created_at": "2026-01-01T10:00:00.000000001Z",
    }
    if voip:
        body["voip"] = True
    if disabled:
        body["disabled"] = True
        body["disabled_reason"] = "disabled by the test"
    if hardware_id is not None:
        body["hardware_id"] = hardware_id
    if push_provider_name is not None:
        body["push_provider_name"] = push_provider_name
    return body


def notification_settings(
    *,
    enabled: bool = True,
    off: Sequence[str] = (),
    templates: Mapping[str, tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """A ``NotificationSettings`` as Stream returns it: every event of
    :data:`NOTIFICATION_EVENTS` on unless named in ``off``, with ``templates`` (key -> (title,
    body)) in ``apns`` and empty wording elsewhere."""
    body: dict[str, Any] = {"enabled": enabled}
    for key in NOTIFICATION_EVENTS:
        title, text = (templates or {}).get(key, ("", ""))
        body[key] = {
            "enabled": key not in off,
            "apns": {"title": title, "body": text},
            "fcm": {},
        }
    return body


def call_type(name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """A ``CallTypeResponse``."""
    return {
        "name": name,
        "created_at": "2026-01-01T10:00:00.000000001Z",
        "updated_at": "2026-01-01T10:00:00.000000001Z",
        "grants": {"user": ["join-call"]},
        "notification_settings": dict(settings),
        "settings": {"ring": {"auto_cancel_timeout_ms": 30000, "incoming_call_timeout_ms": 30000}},
    }


@dataclass(frozen=True)
class RecordedRequest:
    endpoint: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any


@dataclass
class _Failure:
    status: int
    retry_after: str | None


@dataclass
class FakeStreamApi:
    api_key: str
    secret: str
    port: int = 0
    delay: float = 0.0
    repeat_cursor: bool = False
    outage: bool = False
    calls: dict[str, int] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    _members: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _devices: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _call_types: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"default": call_type("default", notification_settings())}
    )
    _failures: list[_Failure] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.app = self._create_app()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_members(self, call_cid: str, members: Sequence[str | Mapping[str, Any]]) -> None:
        """The call's members: user ids or ``MemberResponse`` dicts (see :func:`member`)."""
        entries = [member(m) if isinstance(m, str) else dict(m) for m in members]
        with self._lock:
            self._members[call_cid] = entries

    def set_devices(self, user_id: str, devices: Sequence[Mapping[str, Any]]) -> None:
        """The user's devices as ``DeviceResponse`` dicts (see :func:`device`)."""
        with self._lock:
            self._devices[user_id] = [{**d, "user_id": user_id} for d in devices]

    def set_call_type(self, name: str, settings: Mapping[str, Any]) -> None:
        """Create or replace a call type with these ``notification_settings``."""
        with self._lock:
            self._call_types[name] = call_type(name, settings)

    def remove_call_type(self, name: str) -> None:
        with self._lock:
            self._call_types.pop(name, None)

    def fail_next(self, count: int, status: int = 500, *, retry_after: str | None = None) -> None:
        with self._lock:
            self._failures.extend(_Failure(status, retry_after) for _ in range(count))

    def requests_to(self, endpoint: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.endpoint == endpoint]

    def _create_app(self) -> Flask:
        app = Flask("fake_stream_api")

        @app.post("/api/v2/video/call/members")
        def query_call_members() -> Any:
            return self._handle(MEMBERS, self._query_call_members)

        @app.get("/api/v2/devices")
        def list_devices() -> Any:
            return self._handle(DEVICES, self._list_devices)

        @app.get("/api/v2/video/calltypes")
        def list_call_types() -> Any:
            return self._handle(CALL_TYPES, self._list_call_types)

        @app.get("/api/v2/video/calltypes/<name>")
        def get_call_type(name: str) -> Any:
            return self._handle(CALL_TYPE, lambda: self._get_call_type(name))

        return app

    def _handle(self, endpoint: str, answer: Any) -> Any:
        with self._lock:
            self.calls[endpoint] = self.calls.get(endpoint, 0) + 1
            self.requests.append(
                RecordedRequest(
                    endpoint=endpoint,
                    method=request.method,
                    path=request.path,
                    query=dict(request.args),
                    headers=dict(request.headers),
                    json=request.get_json(silent=True),
                )
            )
        if self.delay:
            self._stopping.wait(self.delay)
        if self.outage:
            return _error(503, "service unavailable"), 503
        refused = self._check_auth()
        if refused is not None:
            return refused
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            headers = {"Retry-After": failure.retry_after} if failure.retry_after else {}
            return _error(failure.status, "injected failure"), failure.status, headers
        return answer()

    def _check_auth(self) -> tuple[Response, int] | None:
        if request.args.get("api_key") != self.api_key:
            return _error(401, "api_key not found"), 401
        if request.headers.get("stream-auth-type") != "jwt":
            return _error(401, "stream-auth-type must be jwt"), 401
        token = request.headers.get("Authorization", "")
        try:
            claims = jwt.decode(token, self.secret, algorithms=["HS256"])
        except jwt.InvalidTokenError as error:
            return _error(401, f"invalid token: {error.__class__.__name__}"), 401
        if "user_id" in claims:
            return _error(403, "a user token is not a server token"), 403
        return None

    def _query_call_members(self) -> Any:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not body.get("type") or not body.get("id"):
            return _error(400, "type and id are required"), 400
        limit = body.get("limit", DEFAULT_LIMIT)
        if not isinstance(limit, int) or not 0 <= limit <= MAX_LIMIT:
            return _error(400, f"limit must be 0..{MAX_LIMIT}"), 400
        cid = f"{body['type']}:{body['id']}"
        offset = 0
        if body.get("next") is not None:
            try:
                offset = _decode_cursor(body["next"], cid)
            except ValueError:
                return _error(400, "invalid next cursor"), 400
        with self._lock:
            members = self._members.get(cid, [])
            page = members[offset : offset + (limit or DEFAULT_LIMIT)]
            total = len(members)
        answer: dict[str, Any] = {"members": page, "duration": "0.10ms"}
        end = offset + len(page)
        if self.repeat_cursor:
            answer["next"] = _encode_cursor(cid, offset)
        elif end < total:
            answer["next"] = _encode_cursor(cid, end)
        return jsonify(answer)

    def _list_call_types(self) -> Any:
        with self._lock:
            listed = {name: dict(body) for name, body in self._call_types.items()}
        return jsonify(call_types=listed, duration="0.10ms")

    def _get_call_type(self, name: str) -> Any:
        with self._lock:
            found = self._call_types.get(name)
        if found is None:
            return _error(404, f"call type {name} does not exist"), 404
        return jsonify({**found, "duration": "0.10ms"})

    def _list_devices(self) -> Any:
        user_id = request.args.get("user_id")
        if not user_id:
            return _error(400, "user_id is required for server-side requests"), 400
        with self._lock:
            listed = list(self._devices.get(user_id, []))
        return jsonify(devices=listed, duration="0.10ms")


def _error(status: int, message: str) -> Response:
    """Stream's APIError body."""
    return jsonify(
        code=4 if status < 500 else -1,
        message=message,
        StatusCode=status,
        duration="0.01ms",
        more_info="https://getstream.io/chat/docs/api_errors_response",
    )


def _encode_cursor(cid: str, offset: int) -> str:
    raw = json.dumps({"cid": cid, "offset": offset}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_cursor(cursor: Any, cid: str) -> int:
    try:
        data = json.loads(base64.urlsafe_b64decode(str(cursor).encode()))
    except (ValueError, TypeError) as error:
        raise ValueError("bad cursor") from error
    if (
        not isinstance(data, dict)
        or data.get("cid") != cid
        or not isinstance(data.get("offset"), int)
    ):
        raise ValueError("cursor of another query")
    return int(data["offset"])


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@contextmanager
def running_fake_stream_api(api_key: str, secret: str) -> Iterator[FakeStreamApi]:
    """Serve a :class:`FakeStreamApi` on 127.0.0.1 (ephemeral port) from a daemon thread."""
    fake = FakeStreamApi(api_key=api_key, secret=secret)
    server = make_server("127.0.0.1", 0, fake.app, threaded=True, request_handler=_QuietHandler)
    fake.port = server.server_port
    # A short poll, so shutdown() at the end of every test returns at once (default 0.5 s).
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.02},
        name="fake-stream-api",
        daemon=True,
    )
    thread.start()
    try:
        yield fake
    finally:
        fake._stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(10)

"""The device registration and push preference API, authenticated with Stream tokens.

    POST   /devices           {"token", "platform": "apns"|"fcm", "voip"?, "app_id"?, "user_id"?}
    GET    /devices           [?user_id=]
    DELETE /devices/<token>   [?user_id=]
    GET    /preferences       [?user_id=]
    PUT    /preferences       {"call_pushes": "on"|"off", "until"?: RFC 3339, "user_id"?}

``Authorization: Bearer <Stream token>`` (or the bare token).  A user token acts for its own
``user_id`` only (naming another user is 403; another user's device is 404, as if it did not
exist); a server token acts for anyone and must name the user.  Errors are JSON:
``{"error": ...}`` plus ``"field"`` for a bad body.  Device tokens are never logged whole.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import SQLAlchemyError

from webhook_app.app import receiver
from worker.push.base import Platform, redact_token
from worker.storage import devices as registry
from worker.storage import preferences
from worker.storage.models import Device, UserPreference, utcnow
from worker.text_escaping import unstorable_reason
from worker.user_tokens import Caller, TokenRejected, verify_authorization

log = logging.getLogger("callpush.api")
blueprint = Blueprint("devices_api", __name__)

# The column sizes in worker/storage/models.py.
MAX_USER_ID = 255
MAX_DEVICE_TOKEN = 512
MAX_APP_ID = 255

_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]+")

DEVICE_FIELDS = frozenset({"token", "platform", "voip", "app_id", "user_id"})
PREFERENCE_FIELDS = frozenset({"call_pushes", "until", "user_id"})


@dataclass
class ApiError(Exception):
    status: int
    message: str
    field: str | None = None


@blueprint.errorhandler(ApiError)
def _api_error(error: ApiError) -> ResponseReturnValue:
    body: dict[str, Any] = {"error": error.message}
    if error.field is not None:
        body["field"] = error.field
    response = jsonify(body)
    response.status_code = error.status
    if error.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="callpush", error="invalid_token"'
    return response


@blueprint.errorhandler(SQLAlchemyError)
def _storage_error(error: SQLAlchemyError) -> ResponseReturnValue:
    # Only the class: SQLAlchemy's message carries the statement's parameters (device tokens).
    rule = request.url_rule.rule if request.url_rule is not None else "?"
    log.error("%s %s: storage error %s", request.method, rule, type(error).__name__)
    return jsonify(error="storage unavailable, retry later"), 503


# --- devices ----------------------------------------------------------------------------------


@blueprint.post("/devices")
def register_device() -> ResponseReturnValue:
    caller = _authenticate()
    body = _json_object(DEVICE_FIELDS)
    user_id = _subject(caller, body.get("user_id"), where="body")
    token = _string(body, "token", MAX_DEVICE_TOKEN, required=True)
    assert token is not None
    platform = _platform(body.get("platform"))
    voip = body.get("voip", False)
    if not isinstance(voip, bool):
        raise ApiError(400, "voip must be true or false", "voip")
    if voip and platform != Platform.APNS:
        raise ApiError(400, "voip is for APNs (PushKit) tokens only", "voip")
    app_id = _string(body, "app_id", MAX_APP_ID, required=False)

    with receiver().db.transaction() as session:
        device = registry.add_device(
            session, user_id=user_id, platform=platform, token=token, voip=voip, app_id=app_id
        )
        shown = _device_json(device)
    log.info(
        "device %s registered for %s (%s%s)",
        redact_token(token),
        user_id,
        platform.value,
        " voip" if voip else "",
    )
    return jsonify(shown), 201


@blueprint.get("/devices")
def list_devices() -> ResponseReturnValue:
    caller = _authenticate()
    user_id = _subject(caller, request.args.get("user_id"), where="query")
    with receiver().db.transaction() as session:
        shown = [_device_json(d) for d in registry.list_devices(session, user_id)]
    return jsonify(devices=shown)


@blueprint.delete("/devices/<path:token>")
def delete_device(token: str) -> ResponseReturnValue:
    caller = _authenticate()
    # A user removes only their own (another user's token is "not found", whether or not it
    # exists); a server removes any, or only a given user's when ?user_id= is passed.
    requested = request.args.get("user_id")
    owner: str | None = None
    if requested is not None or not caller.is_server:
        owner = _subject(caller, requested, where="query")
    if unstorable_reason(token):  # no stored token holds a NUL
        raise ApiError(404, "no such device")
    with receiver().db.transaction() as session:
        removed = registry.remove_device(session, token, owner)
    if not removed:
        raise ApiError(404, "no such device")
    log.info("device %s removed (%s)", redact_token(token), owner or "by server")
    return Response(status=204)


# --- preferences ------------------------------------------------------------------------------


@blueprint.get("/preferences")
def get_preferences() -> ResponseReturnValue:
    caller = _authenticate()
    user_id = _subject(caller, request.args.get("user_id"), where="query")
    with receiver().db.transaction() as session:
        shown = _preference_json(user_id, preferences.get_preference(session, user_id))
    return jsonify(shown)


@blueprint.put("/preferences")
def put_preferences() -> ResponseReturnValue:
    caller = _authenticate()
    body = _json_object(PREFERENCE_FIELDS)
    user_id = _subject(caller, body.get("user_id"), where="body")
    call_pushes = body.get("call_pushes")
    if call_pushes not in ("on", "off"):
        raise ApiError(400, 'call_pushes must be "on" or "off"', "call_pushes")
    until = _until(body.get("until"), muting=call_pushes == "off")

    with receiver().db.transaction() as session:
        preference = preferences.set_preference(session, user_id, call_pushes == "off", until)
        shown = _preference_json(user_id, preference)
    log.info("call pushes %s for %s%s", call_pushes, user_id, f" until {until}" if until else "")
    return jsonify(shown)


# --- helpers ----------------------------------------------------------------------------------


def _authenticate() -> Caller:
    try:
        return verify_authorization(request.headers.get("Authorization"), receiver().settings.apps)
    except TokenRejected as rejected:
        # The rule, not the path: DELETE's path holds a whole device token.
        rule = request.url_rule.rule if request.url_rule is not None else "?"
        log.info("%s %s: token rejected: %s", request.method, rule, rejected.message)
        raise ApiError(401, rejected.message) from None


def _subject(caller: Caller, requested: Any, *, where: str) -> str:
    """The user the request acts for: a user token's own id; a server token's named user."""
    if requested is not None and (not isinstance(requested, str) or not requested):
        raise ApiError(400, "user_id must be a non-empty string", "user_id")
    if caller.is_server:
        if requested is None:
            hint = "?user_id=" if where == "query" else '"user_id"'
            raise ApiError(400, f"a server token must name the user ({hint})", "user_id")
        user_id: str = requested
    else:
        assert caller.user_id is not None
        if requested is not None and requested != caller.user_id:
            raise ApiError(403, "a user token may only act for its own user_id")
        user_id = caller.user_id
    if len(user_id) > MAX_USER_ID:
        raise ApiError(400, f"user_id is longer than {MAX_USER_ID} characters", "user_id")
    reason = unstorable_reason(user_id)
    if reason is not None:  # PostgreSQL refuses NUL: a 400 naming the field, not a 503
        raise ApiError(400, f"user_id {reason}", "user_id")
    return user_id


def _json_object(allowed: frozenset[str]) -> dict[str, Any]:
    try:
        body = request.get_json(force=True, silent=True)
    except RecursionError:  # nested deeper than Python's JSON parser goes
        body = None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        # Rejected rather than ignored: e.g. Stream's "voip_token" would silently mean voip=false.
        raise ApiError(400, f"unknown field {unknown[0]!r}", unknown[0])
    return body


def _string(body: dict[str, Any], name: str, max_length: int, *, required: bool) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise ApiError(400, f"{name} is required", name)
        return None
    # Push tokens and bundle ids are printable ASCII (openapi.py documents this pattern).
    if not isinstance(value, str) or not _PRINTABLE_ASCII.fullmatch(value):
        raise ApiError(
            400, f"{name} must be a non-empty string of printable ASCII without spaces", name
        )
    if len(value) > max_length:
        raise ApiError(400, f"{name} is longer than {max_length} characters", name)
    return value


def _platform(value: Any) -> Platform:
    try:
        return Platform(value)
    except ValueError:
        choices = " or ".join(f'"{p.value}"' for p in Platform)
        raise ApiError(400, f"platform must be {choices}", "platform") from None


def _until(value: Any, *, muting: bool) -> datetime | None:
    if value is None:
        return None
    if not muting:
        raise ApiError(400, 'until is only allowed with "call_pushes": "off"', "until")
    if not isinstance(value, str):
        raise ApiError(400, "until must be an RFC 3339 timestamp string", "until")
    try:
        until = preferences.parse_rfc3339(value)
    except ValueError as error:
        raise ApiError(400, f"until: {error}", "until") from None
    if until <= utcnow():
        raise ApiError(400, "until must be in the future", "until")
    return until


def _device_json(device: Device) -> dict[str, Any]:
    # The full token: only ever answered to its owner (or a server), never logged.
    return {
        "id": device.id,
        "user_id": device.user_id,
        "platform": device.platform,
        "token": device.token,
        "voip": device.voip,
        "app_id": device.app_id,
        "source": device.source,
        "created_at": _timestamp(device.created_at),
        "disabled": device.disabled_at is not None,
        "disabled_at": _timestamp(device.disabled_at),
        "disabled_reason": device.disabled_reason,
    }


def _preference_json(user_id: str, preference: UserPreference | None) -> dict[str, Any]:
    muted = preferences.is_muted(preference, utcnow())
    until = preference.muted_until if muted and preference is not None else None
    return {
        "user_id": user_id,
        "call_pushes": "off" if muted else "on",
        "until": _timestamp(until),
        "updated_at": _timestamp(preference.updated_at if preference is not None else None),
    }


def _timestamp(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")

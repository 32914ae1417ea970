"""The device registration and push preference API, authenticated with Stream tokens.

    POST   /devices           {"token", "platform": "apns"|"fcm", "voip"?, "app_id"?,
                               "push_provider_name"?, "user_id"?}
    GET    /devices           [?user_id=]
    DELETE /devices/<token>   [?user_id=]
    GET    /preferences       [?user_id=]
    PUT    /preferences       {"call_pushes": "on"|"off", "until"?: RFC 3339, "user_id"?}

``Authorization: Bearer <Stream token>`` (or the bare token).  The token acts only inside the
Stream app whose secret signed it (``?api_key=`` or ``X-Api-Key``, as Stream's clients send
it, restricts verification to that app).  A user token acts for its own ``user_id`` only
(naming another user is 403; another user's device is 404, as if it did not exist); a server
token acts for any user of its app and must name the user.  Errors are JSON: ``{"error": ...}``
plus ``"field"`` for a bad body or query.  Device tokens are never logged whole.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue

from webhook_app import api_errors
from webhook_app.api_errors import ApiError
from webhook_app.api_models import (
    MAX_API_KEY,
    MAX_USER_ID,
    DeviceRegistration,
    PreferenceChange,
    validated,
)
from webhook_app.receiver import receiver
from worker.foundation.logging_setup import redact_token
from worker.foundation.text_escaping import unstorable_reason
from worker.push.base import Platform
from worker.storage import devices as registry
from worker.storage import preferences
from worker.storage.models import Device, UserPreference, utcnow
from worker.stream.user_tokens import Caller, TokenRejected, verify_authorization

log = logging.getLogger("callpush.api")
blueprint = Blueprint("devices_api", __name__)
# A Stream token's 401 (RFC 6750 §3); webhook_app.receipts_api answers the same way.
CHALLENGE = 'Bearer realm="callpush", error="invalid_token"'
api_errors.register(blueprint, log=log, challenge=CHALLENGE)


# --- devices ----------------------------------------------------------------------------------


@blueprint.post("/devices")
def register_device() -> ResponseReturnValue:
    caller = authenticate()
    registration = validated(DeviceRegistration, json_object())
    user_id = _subject(caller, registration.user_id, where="body")
    token, platform, voip = registration.token, registration.platform, registration.voip
    app_id, provider_name = registration.app_id, registration.push_provider_name
    if provider_name is not None:
        _check_provider_name(caller.api_key, platform, provider_name)

    ctx = receiver()
    with ctx.db.transaction() as session:
        device = registry.add_device(
            session,
            api_key=caller.api_key,
            user_id=user_id,
            platform=platform,
            token=token,
            voip=voip,
            app_id=app_id,
            push_provider_name=provider_name,
            max_per_user=ctx.settings.devices.max_per_user,
        )
        shown = _device_json(device)
    log.info(
        "device %s registered for %s of app %s (%s%s)",
        redact_token(token),
        user_id,
        caller.api_key,
        platform.value,
        " voip" if voip else "",
    )
    return jsonify(shown), 201


@blueprint.get("/devices")
def list_devices() -> ResponseReturnValue:
    caller = authenticate()
    user_id = _subject(caller, request.args.get("user_id"), where="query")
    with receiver().db.transaction() as session:
        # A registration whose token moved to another user is no longer this user's device.
        found = registry.list_devices(session, caller.api_key, user_id, include_moved=False)
        shown = [_device_json(d) for d in found]
    return jsonify(devices=shown)


@blueprint.delete("/devices/<path:token>")
def delete_device(token: str) -> ResponseReturnValue:
    caller = authenticate()
    _refuse_unstorable(token, "token")
    # A user removes only their own (another user's token is "not found", whether or not it
    # exists); a server removes any of its app's, or only a given user's with ?user_id=.
    requested = request.args.get("user_id")
    owner: str | None = None
    if requested is not None or not caller.is_server:
        owner = _subject(caller, requested, where="query")
    if unstorable_reason(token):  # no stored token holds a NUL
        raise ApiError(404, "no such device")
    with receiver().db.transaction() as session:
        removed = registry.remove_device(session, caller.api_key, token, owner)
    if not removed:
        raise ApiError(404, "no such device")
    log.info("device %s removed (%s)", redact_token(token), owner or "by server")
    return Response(status=204)


# --- preferences ------------------------------------------------------------------------------


@blueprint.get("/preferences")
def get_preferences() -> ResponseReturnValue:
    caller = authenticate()
    user_id = _subject(caller, request.args.get("user_id"), where="query")
    with receiver().db.transaction() as session:
        preference = preferences.get_preference(session, caller.api_key, user_id)
        shown = _preference_json(user_id, preference)
    return jsonify(shown)


@blueprint.put("/preferences")
def put_preferences() -> ResponseReturnValue:
    caller = authenticate()
    change = validated(PreferenceChange, json_object())
    user_id = _subject(caller, change.user_id, where="body")
    call_pushes, until = change.call_pushes, change.until

    with receiver().db.transaction() as session:
        preference = preferences.set_preference(
            session, caller.api_key, user_id, call_pushes == "off", until
        )
        shown = _preference_json(user_id, preference)
    log.info("call pushes %s for %s%s", call_pushes, user_id, f" until {until}" if until else "")
    return jsonify(shown)


# --- helpers ----------------------------------------------------------------------------------


def authenticate() -> Caller:
    """The caller, from the Stream token; then the query string is checked (after, so that
    without a valid token every request is a plain 401)."""
    try:
        caller = verify_authorization(
            request.headers.get("Authorization"),
            receiver().settings.apps,
            api_key=_named_app(),
        )
    except TokenRejected as rejected:
        # The rule, not the path: DELETE's path holds a whole device token.
        rule = request.url_rule.rule if request.url_rule is not None else "?"
        log.info("%s %s: token rejected: %s", request.method, rule, rejected.message)
        raise ApiError(401, rejected.message) from None
    for name, value in request.args.items(multi=True):
        _refuse_unstorable(name, _shown_field(name))
        _refuse_unstorable(value, name)
    return caller


def _named_app() -> str | None:
    """The app the caller names, as Stream's clients do: ``?api_key=`` or ``X-Api-Key``."""
    named = {
        value
        for value in (request.args.get("api_key"), request.headers.get("X-Api-Key"))
        if value is not None
    }
    if len(named) > 1:
        # The named app decides which secrets may verify the token, so two different apps
        # are credentials that cannot both hold: a 401, as for an unknown app.
        raise ApiError(401, "the api_key query parameter and X-Api-Key header name different apps")
    api_key = named.pop() if named else None
    if api_key is not None and (not api_key or len(api_key) > MAX_API_KEY):
        raise ApiError(400, f"api_key must be 1 to {MAX_API_KEY} characters", "api_key")
    return api_key


def _refuse_unstorable(value: str, field: str) -> None:
    """NUL cannot be stored in PostgreSQL text and a lone surrogate cannot be encoded at all:
    either is a 400 naming the field, never a storage error."""
    if "\x00" in value:
        raise ApiError(400, f"{field} contains a NUL character", field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, f"{field} is not valid Unicode (a lone surrogate)", field) from None


def _shown_field(name: str) -> str:
    """The name to report: as given, or with escapes when it is itself unstorable."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return ascii(name)[1:-1]
    return ascii(name)[1:-1] if "\x00" in name else name


def _refuse_unstorable_json(value: Any, field: str) -> None:
    if isinstance(value, str):
        _refuse_unstorable(value, field)
    elif isinstance(value, list):
        for item in value:
            _refuse_unstorable_json(item, field)
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_unstorable(key, field)
            _refuse_unstorable_json(item, field)


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


def json_object() -> dict[str, Any]:
    """The request's JSON object, with text the database can store (its fields are then
    checked by a model of webhook_app.api_models)."""
    try:
        body = request.get_json(force=True, silent=True)
    except RecursionError:  # nested deeper than Python's JSON parser goes
        body = None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    for key, value in body.items():
        field = _shown_field(key)
        _refuse_unstorable(key, field)
        _refuse_unstorable_json(value, field)
    return body


def _check_provider_name(api_key: str, platform: Platform, name: str) -> None:
    """The name must be one of the caller's app's providers of that platform, as Stream refuses
    a device whose provider is not configured."""
    app = receiver().settings.app_for_key(api_key)
    named = (app.apns_providers if platform is Platform.APNS else app.fcm_providers) if app else {}
    if name not in named:
        configured = ", ".join(sorted(named)) or "none"
        raise ApiError(
            400,
            f"push provider {name!r} is not configured for app {api_key} "
            f"({platform.value} providers: {configured})",
            "push_provider_name",
        )


def _device_json(device: Device) -> dict[str, Any]:
    # The full token: only ever answered to its owner (or a server), never logged.
    return {
        "id": device.id,
        "api_key": device.api_key,
        "user_id": device.user_id,
        "platform": device.platform,
        "token": device.token,
        "voip": device.voip,
        "app_id": device.app_id,
        "push_provider_name": device.push_provider_name,
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

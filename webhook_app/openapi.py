"""``GET /openapi.json``: the OpenAPI 3.1 description of callpush's HTTP endpoints.

A hand-written document (not generated from the code): it is the contract.  The tests validate
it with openapi-spec-validator and check that every Flask route is described, so a new route
without a description fails CI.  ``OPENAPI`` is the same for every deployment; what is served is
``document_for(settings)``: it adds the one thing only the deployment knows, the push provider
names a device may be registered with, so that every request the document calls valid is one
this deployment accepts.
"""

from __future__ import annotations

import copy
from typing import Any

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from webhook_app.receiver import receiver
from worker.delivery import push_tokens
from worker.foundation.settings import Settings
from worker.foundation.version import UNKNOWN

blueprint = Blueprint("openapi", __name__)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema_type: str, **extra: Any) -> dict[str, Any]:
    return {"type": [schema_type, "null"], **extra}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _ref_param(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/parameters/{name}"}


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


TIMESTAMP = {"type": "string", "format": "date-time"}
NULLABLE_TIMESTAMP = _nullable("string", format="date-time")
# What worker.ops.event_log.parse_time takes, as a pattern a generator can follow: a duration ago
# (`30m`, `1h30m`, `2d`, `1w`; the service also takes longer ones up to year 1) or an ISO 8601
# date or time (UTC unless it has an offset).
_DURATION = r"[1-9][0-9]{0,3}[smhdw](?:[0-9]{1,4}[smhdw]){0,3}"
_ISO_TIME = (
    r"[1-9][0-9]{3}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
    r"(?:T(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9])?(?:Z|[+-](?:0[0-9]|1[0-3]):[0-5][0-9])?)?"
)
TIME_VALUE = {
    "type": "string",
    "description": "A duration ago (`30m`, `1h`, `2d`, `1w`) or an ISO 8601 timestamp.",
    "pattern": f"^(?:{_DURATION}|{_ISO_TIME})$",
    "examples": ["1h", "2024-05-01T06:00:00Z"],
}
# The same, or empty for no bound.
TIME_QUERY = {**TIME_VALUE, "pattern": f"^(?:{_DURATION}|{_ISO_TIME})?$"}
# Text compared with stored text: anything but NUL, which PostgreSQL cannot store (a 400).
TEXT = {"type": "string", "pattern": "^[^\\u0000]*$"}
USER_ID = {**TEXT, "minLength": 1, "maxLength": 255}
# Push tokens and bundle ids: printable ASCII without spaces.
PRINTABLE_ASCII = "^[!-~]+$"
APNS_TOKEN_PATTERN = (
    f"^(?:[0-9A-Fa-f]{{2}}){{{push_tokens.APNS_MIN_BYTES},{push_tokens.APNS_MAX_BYTES}}}$"
)
FCM_TOKEN_PATTERN = f"^[A-Za-z0-9_:-]{{{push_tokens.FCM_MIN_LENGTH},{push_tokens.FCM_MAX_LENGTH}}}$"
# Two or more components of letters, digits and hyphens, not ending in ".voip" (any case).
BUNDLE_ID_PATTERN = r"^(?![\s\S]*\.[vV][oO][iI][pP]$)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+$"
# Event ids are 64-bit (worker.ops.event_log.MAX_ID).
EVENT_ID = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
EVENT_STATUS = {
    "type": "string",
    "enum": ["received", "processing", "processed", "ignored", "failed"],
}
DELIVERY_STATUS = {
    "type": "string",
    "enum": [
        "sending",
        "sent",
        "token_invalid",
        "retry",
        "failed",
        "expired",
        "unconfirmed",
        "cancelled",
        "skipped",
    ],
}
# How many recipients a push event reached: every recipient has a recorded outcome.
REACH = {
    "oneOf": [{"$ref": "#/components/schemas/Reach"}, {"type": "null"}],
    "description": "How many of the event's recipients a push reached; null: it pushes nothing.",
}
PUSH_COUNTS = {
    "type": "object",
    "description": "Pushes by delivery status (only the statuses that occur).",
    "additionalProperties": {"type": "integer"},
}

ADMIN: list[dict[str, list[str]]] = [{"adminToken": []}]
# Stream's clients name their app like this; when given, only that app's secrets verify.
APP_KEY_PARAMS: list[dict[str, Any]] = [
    {
        "name": "api_key",
        "in": "query",
        "description": "The Stream app: only its secrets verify the token.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 64},
    },
    {
        "name": "X-Api-Key",
        "in": "header",
        "description": (
            "The Stream app, as the `api_key` query parameter (both given and different: 401)."
        ),
        "schema": {"type": "string", "minLength": 1, "maxLength": 64},
    },
]
STREAM_TOKEN: list[dict[str, list[str]]] = [{"streamToken": []}]
ADMIN_ERRORS = {
    "400": {"$ref": "#/components/responses/BadInput"},
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "404": {"$ref": "#/components/responses/AdminOff"},
    "429": {"$ref": "#/components/responses/TooManyFailures"},
    "503": {"$ref": "#/components/responses/StorageDown"},
}
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds until this client may try again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}


def _html_or_json(description: str) -> dict[str, Any]:
    """A dashboard error: its HTML page, or the app's JSON error for a URL no page matches."""
    return {
        "description": description,
        "content": {
            "text/html": {"schema": {"type": "string"}},
            "application/json": {"schema": _ref("Error")},
        },
    }


DASHBOARD_ERRORS = {
    "400": _html("Bad input: the page names the field."),
    "404": _html_or_json("No admin token is configured, or no such thing."),
    "503": _html("The database is unavailable."),
}


def _dashboard_page(summary: str, parameters: list[dict[str, Any]] | None = None) -> Any:
    operation: dict[str, Any] = {
        "tags": ["dashboard"],
        "summary": summary,
        "security": [{"dashboardSession": []}],
        "responses": {
            "200": _html("The page."),
            "302": {"description": "Not logged in: to the login page."},
            **DASHBOARD_ERRORS,
        },
    }
    if parameters:
        operation["parameters"] = parameters
    return operation


def _dashboard_form(
    summary: str,
    fields: dict[str, Any],
    responses: dict[str, Any],
    *,
    session: bool = True,
    rules: dict[str, Any] | None = None,
) -> Any:
    operation: dict[str, Any] = {
        "tags": ["dashboard"],
        "summary": summary,
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {"type": "object", "properties": fields, **(rules or {})}
                }
            },
        },
        "responses": {**DASHBOARD_ERRORS, **responses},
    }
    if session:
        operation["security"] = [{"dashboardSession": []}]
        operation["responses"]["401"] = _html("Not logged in (or the session has ended).")
    return operation


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "callpush",
        # The running version, set by document_for.
        "version": UNKNOWN,
        "summary": "Stream Video webhooks in; VoIP, FCM and alert call pushes out.",
        "description": (
            "The public endpoints (Stream's webhook, the device and preference API, health and "
            "metrics) and the operators' admin API and dashboard.  Times are RFC 3339 UTC. "
            "Device tokens are answered whole only to their owner by the device API; the admin "
            "API shows redacted hints only."
        ),
        "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
    },
    "tags": [
        {"name": "webhooks", "description": "Stream Video's webhook."},
        {
            "name": "devices",
            "description": "Push tokens, preferences and receipts, with Stream tokens.",
        },
        {"name": "operations", "description": "Health, readiness, metrics, this document."},
        {"name": "admin", "description": "The event log, replays, device lookup (admin token)."},
        {"name": "dashboard", "description": "The server-rendered ops dashboard (HTML)."},
    ],
    "paths": {
        "/webhooks/stream": {
            "post": {
                "tags": ["webhooks"],
                "summary": "Receive one Stream Video webhook",
                "description": (
                    "Verified over the raw (gunzipped) body, stored in the inbox, then queued. "
                    "A 2xx only once the event is committed; Stream retries 408/429/5xx with the "
                    "same X-Webhook-Id, which are answered 200 `duplicate`, and so is the same "
                    "body under another X-Webhook-Id within `intake.dedupe_window_seconds` (a "
                    "replay).  Every JSON object with a `type` is stored: an event the worker "
                    "cannot act on as `failed`, a push event older than "
                    "`intake.max_event_age_seconds` as `ignored`, each with its `reason`."
                ),
                "security": [{"streamSignature": [], "streamApiKey": []}],
                "parameters": [
                    {
                        "name": "X-Webhook-Id",
                        "in": "header",
                        "schema": {"type": "string"},
                        "description": (
                            "Deduplicates retries (else the body's SHA-256 does); only its "
                            "first 128 characters are kept."
                        ),
                    },
                    {
                        "name": "X-Webhook-Attempt",
                        "in": "header",
                        "schema": {"type": "string"},
                        "description": "Stream's attempt number; anything but a positive "
                        "integer counts as 1.",
                    },
                ],
                "requestBody": {
                    "required": True,
                    "description": "A Stream Video event; may be gzip-compressed.",
                    "content": {"application/json": {"schema": _ref("StreamEvent")}},
                },
                "responses": {
                    "200": _json(
                        _ref("WebhookAnswer"),
                        "Stored already (`duplicate`) or stored as `ignored`/`processed` "
                        "(needs no push, or too old to push) or `failed` (cannot be acted on).",
                    ),
                    "202": _json(_ref("WebhookAnswer"), "Stored and queued (`accepted`)."),
                    "400": _error("Not UTF-8 JSON, not an object, no usable `type`, or bad gzip."),
                    "401": _error("Missing or unknown X-Api-Key, or a bad X-Signature."),
                    "413": _error("The body is larger than `max_body_bytes`."),
                    "503": _error("The inbox is unavailable: Stream retries."),
                },
            }
        },
        "/devices": {
            "get": {
                "tags": ["devices"],
                "summary": "A user's devices in the token's Stream app",
                "security": STREAM_TOKEN,
                "parameters": [_ref_param("UserIdQuery"), *APP_KEY_PARAMS],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["devices"],
                            "properties": {"devices": {"type": "array", "items": _ref("Device")}},
                        },
                        "The devices.",
                    ),
                    "400": _error("A server token must name the user."),
                    "401": _error("Missing or invalid Stream token."),
                    "403": _error("A user token naming another user."),
                    "503": _error("Storage unavailable."),
                },
            },
            "post": {
                "tags": ["devices"],
                "summary": "Register (or move, or re-enable) a push token",
                "description": (
                    "In the token's Stream app.  A token active for another user of the app "
                    "moves to this one (the old registration is disabled, recorded as moved); "
                    "beyond `devices.max_per_user` active devices the registration refreshed "
                    "longest ago is disabled as evicted.  APNs tokens must be hex (16 to 100 "
                    "bytes), FCM tokens 32 to 512 of `[A-Za-z0-9_:-]`."
                ),
                "security": STREAM_TOKEN,
                "parameters": APP_KEY_PARAMS,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("DeviceRegistration")}},
                },
                "responses": {
                    "201": _json(_ref("Device"), "The device."),
                    "400": _error("A bad body (the error names the field)."),
                    "401": _error("Missing or invalid Stream token."),
                    "403": _error("A user token naming another user."),
                    "503": _error("Storage unavailable."),
                },
            },
        },
        "/devices/{token}": {
            "delete": {
                "tags": ["devices"],
                "summary": "Remove a push token",
                "description": (
                    "Only the caller's own registration (a token that moved to another user "
                    "is no longer the old owner's); a server token removes any of its app's."
                ),
                "security": STREAM_TOKEN,
                "parameters": [
                    {
                        "name": "token",
                        "in": "path",
                        "required": True,
                        "description": "A token holding NUL matches no device (404).",
                        "schema": {"type": "string"},
                    },
                    _ref_param("UserIdQuery"),
                    *APP_KEY_PARAMS,
                ],
                "responses": {
                    "204": {"description": "Removed."},
                    "400": _error("A bad query: user_id or app (the error names the field)."),
                    "401": _error("Missing or invalid Stream token."),
                    "403": _error("A user token naming another user."),
                    "404": _error("No such device (or another user's)."),
                    "503": _error("Storage unavailable."),
                },
            }
        },
        "/preferences": {
            "get": {
                "tags": ["devices"],
                "summary": "A user's call-push preference in the token's Stream app",
                "security": STREAM_TOKEN,
                "parameters": [_ref_param("UserIdQuery"), *APP_KEY_PARAMS],
                "responses": {
                    "200": _json(_ref("Preference"), "The preference."),
                    "400": _error("A server token must name the user."),
                    "401": _error("Missing or invalid Stream token."),
                    "403": _error("A user token naming another user."),
                    "503": _error("Storage unavailable."),
                },
            },
            "put": {
                "tags": ["devices"],
                "summary": "Switch a user's call pushes off (for good or until a time) or on",
                "security": STREAM_TOKEN,
                "parameters": APP_KEY_PARAMS,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("PreferenceChange")}},
                },
                "responses": {
                    "200": _json(_ref("Preference"), "The preference."),
                    "400": _error("A bad body (the error names the field)."),
                    "401": _error("Missing or invalid Stream token."),
                    "403": _error("A user token naming another user."),
                    "503": _error("Storage unavailable."),
                },
            },
        },
        "/receipts": {
            "post": {
                "tags": ["devices"],
                "summary": "The phone received a push (optional, from the app's push handler)",
                "description": (
                    "Every push callpush sends carries a `callpush_receipt_id` (top level of "
                    "an APNs body, a key of FCM data).  The app sends it back from its PushKit "
                    "or FCM handler, with the user's Stream token of the app the push was for; "
                    "callpush records when it arrived (shown by `callpush trace` and the "
                    "dashboard, counted by `callpush_push_receipts_total`).  A repeat is "
                    "answered 200 with the first time (`duplicate`: true)."
                ),
                "security": STREAM_TOKEN,
                "parameters": APP_KEY_PARAMS,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("ReceiptConfirmation")}},
                },
                "responses": {
                    "200": _json(_ref("Receipt"), "Recorded, now or (a repeat) before."),
                    "400": _error("A bad body (the error names the field)."),
                    "401": _error("Missing or invalid Stream token."),
                    "403": _error("A server token, or a push sent to another user."),
                    "404": _error("No push of the token's app carried that id."),
                    "503": _error("Storage unavailable."),
                },
            }
        },
        "/healthz": {
            "get": {
                "tags": ["operations"],
                "summary": "The process is up (liveness), and its version",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["status", "version"],
                            "properties": {
                                "status": {"const": "ok"},
                                "version": {
                                    "type": "string",
                                    "description": (
                                        "callpush's version (the package's; \"unknown\" "
                                        "when run from a source tree never installed)."
                                    ),
                                },
                            },
                        },
                        "Up.",
                    )
                },
            }
        },
        "/readyz": {
            "get": {
                "tags": ["operations"],
                "summary": "The database and the broker are reachable (readiness)",
                "responses": {
                    "200": _json(_ref("Readiness"), "Ready."),
                    "503": _json(_ref("Readiness"), "Not ready: the failing check is named."),
                },
            }
        },
        "/metrics": {
            "get": {
                "tags": ["operations"],
                "summary": "Prometheus metrics",
                "description": (
                    "Webhooks by type and outcome, pushes by provider and result, the "
                    "webhook-to-provider latency histogram, queue depth, tokens disabled, "
                    "the version (callpush_build_info)."
                ),
                "responses": {
                    "200": {
                        "description": "The Prometheus text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "tags": ["operations"],
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "The OpenAPI 3.1 description.")},
            }
        },
        "/admin/events": {
            "get": {
                "tags": ["admin"],
                "summary": "The event log, newest first",
                "security": ADMIN,
                "parameters": [
                    _ref_param("AppFilter"),
                    {"name": "status", "in": "query", "schema": EVENT_STATUS},
                    {
                        "name": "type",
                        "in": "query",
                        "schema": {**TEXT, "examples": ["call.ring"]},
                    },
                    {
                        "name": "call",
                        "in": "query",
                        "description": "A call cid.",
                        "schema": {**TEXT, "examples": ["default:123"]},
                    },
                    {
                        "name": "user",
                        "in": "query",
                        "description": (
                            "Only events that concerned this user id: as the caller, a member, "
                            "a fan-out recipient or the owner of a device pushed to. `since` "
                            "then defaults to 24h ago (the search reads the window's bodies)."
                        ),
                        "schema": {**TEXT, "maxLength": 255, "examples": ["bob"]},
                    },
                    {"name": "since", "in": "query", "schema": TIME_QUERY},
                    {"name": "until", "in": "query", "schema": TIME_QUERY},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": 1000,
                            "default": 100,
                        },
                    },
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["events"],
                            "properties": {
                                "events": {"type": "array", "items": _ref("EventSummary")}
                            },
                        },
                        "The events.",
                    ),
                    **ADMIN_ERRORS,
                },
            }
        },
        "/admin/events/{event_id}": {
            "get": {
                "tags": ["admin"],
                "summary": "One event, its recipients and each device's push",
                "security": ADMIN,
                "parameters": [_ref_param("EventId")],
                "responses": {
                    "200": _json(_ref("EventDetail"), "The event."),
                    **ADMIN_ERRORS,
                    "404": _error("No such event, or no admin token is configured."),
                },
            }
        },
        "/admin/replay": {
            "post": {
                "tags": ["admin"],
                "summary": "Replay events through the normal processing path (bulk queue)",
                "description": (
                    "Devices that already got the push are skipped and rings that are over are "
                    "not re-rung, unless `force`.  An event that arrived older than "
                    "`intake.max_event_age_seconds` was never pushed and is not pushed now, "
                    "unless `allow_stale`.  `dry_run` answers what would be re-sent and "
                    "changes nothing."
                ),
                "security": ADMIN,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("ReplayRequest")}},
                },
                "responses": {
                    "200": _json(_ref("ReplayPlan"), "The dry run."),
                    "202": _json(_ref("ReplayResult"), "Reopened and queued."),
                    **ADMIN_ERRORS,
                },
            }
        },
        "/admin/devices": {
            "get": {
                "tags": ["admin"],
                "summary": "Device lookup (tokens redacted) with each device's last push",
                "security": ADMIN,
                "parameters": [
                    _ref_param("AppFilter"),
                    {"name": "user_id", "in": "query", "schema": TEXT},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": 1000,
                            "default": 100,
                        },
                    },
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["devices"],
                            "properties": {
                                "devices": {"type": "array", "items": _ref("DeviceSummary")}
                            },
                        },
                        "The devices.",
                    ),
                    "400": _error("A bad limit."),
                    **ADMIN_ERRORS,
                },
            }
        },
        "/admin/calls/{call_cid}/trace": {
            "get": {
                "tags": ["admin"],
                "summary": "One call's timeline: webhooks, recipients, pushes with latency",
                "security": ADMIN,
                "parameters": [_ref_param("CallCid"), _ref_param("AppFilter")],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["call_cid", "entries"],
                            "properties": {
                                "call_cid": {"type": "string"},
                                "entries": {"type": "array", "items": _ref("TraceEntry")},
                            },
                        },
                        "The timeline (empty for an unknown call).",
                    ),
                    "400": _error("An app that is not configured."),
                    **ADMIN_ERRORS,
                },
            }
        },
        "/admin/users/{user_id}": {
            "get": {
                "tags": ["admin"],
                "summary": (
                    "Did the user's phone ring? Their devices, call-push preferences and the "
                    "events that concerned them, each with every push to each of their devices"
                ),
                "security": ADMIN,
                "parameters": [
                    _ref_param("UserIdPath"),
                    _ref_param("AppFilter"),
                    {
                        "name": "since",
                        "in": "query",
                        "description": "Default: 24h ago.",
                        "schema": TIME_QUERY,
                    },
                    {"name": "until", "in": "query", "schema": TIME_QUERY},
                    {
                        "name": "limit",
                        "in": "query",
                        "description": "Events per page.",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
                    },
                    {
                        "name": "before",
                        "in": "query",
                        "description": "The next page: `activity.next_before` of this one.",
                        "schema": EVENT_ID,
                    },
                ],
                "responses": {
                    "200": _json(_ref("UserOverview"), "The user (empty lists for no one)."),
                    **ADMIN_ERRORS,
                },
            }
        },
        "/dashboard/": {
            "get": _dashboard_page(
                "Recent events with filters; pushes last hour",
                [
                    {
                        "name": "status",
                        "in": "query",
                        "description": "Any other value: every status.",
                        "schema": {"type": "string"},
                    },
                    {"name": "type", "in": "query", "schema": TEXT},
                    {"name": "call", "in": "query", "schema": TEXT},
                    {
                        "name": "user",
                        "in": "query",
                        "description": "Only events that concerned this user id.",
                        "schema": {**TEXT, "maxLength": 255},
                    },
                    {
                        "name": "since",
                        "in": "query",
                        "description": "As the admin API's (default 24h); an unreadable time "
                        "is shown on the page.",
                        "schema": {"type": "string"},
                    },
                    {"name": "until", "in": "query", "schema": {"type": "string"}},
                ],
            )
        },
        "/dashboard/login": {
            "get": {
                "tags": ["dashboard"],
                "summary": "The login form",
                "parameters": [
                    {
                        "name": "next",
                        "in": "query",
                        "description": "A dashboard path to go to after logging in.",
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {"200": _html("The form."), **DASHBOARD_ERRORS},
            },
            "post": _dashboard_form(
                "Log in with the admin token (sets an HttpOnly, SameSite=Strict cookie, Secure "
                "over https); failed attempts are throttled per client",
                {"token": {"type": "string"}, "next": {"type": "string"}},
                {
                    "302": {"description": "Logged in: to `next` (a dashboard path) or home."},
                    "401": _html("Not the admin token."),
                    "429": {
                        **_html("Too many failed attempts from this client."),
                        "headers": RETRY_AFTER,
                    },
                },
                session=False,
            ),
        },
        "/dashboard/logout": {
            "post": _dashboard_form(
                "Log out: the session is revoked server-side",
                {"csrf": {"type": "string"}},
                {"302": {"description": "Logged out."}, "403": _html("A stale form.")},
            )
        },
        "/dashboard/events/{event_id}": {
            "get": _dashboard_page("One event with its deliveries", [_ref_param("EventId")])
        },
        "/dashboard/calls/{call_cid}": {
            "get": _dashboard_page("One call's timeline", [_ref_param("CallCid")])
        },
        "/dashboard/users/{user_id}": {
            "get": _dashboard_page(
                "One user: devices, preferences, recent calls with each device's outcome",
                [
                    _ref_param("UserIdPath"),
                    {
                        "name": "app",
                        "in": "query",
                        "description": "Only this Stream app's (an unknown one: 404).",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "since",
                        "in": "query",
                        "description": "Default 24h; an unreadable time is shown on the page.",
                        "schema": {"type": "string"},
                    },
                    {"name": "until", "in": "query", "schema": {"type": "string"}},
                    {"name": "before", "in": "query", "schema": EVENT_ID},
                ],
            )
        },
        "/dashboard/search": {
            "get": _dashboard_page(
                "The header's search box: a call id (has `:`) to its timeline, an event id "
                "(digits) to the event, anything else to the user page; digits that are both "
                "an event and a known user get a page to choose",
                [
                    {"name": "q", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "app",
                        "in": "query",
                        "description": "Kept on the page searched to (an unknown one: 404).",
                        "schema": {"type": "string"},
                    },
                ],
            )
        },
        "/dashboard/replay": {
            "post": _dashboard_form(
                "Replay: the dry-run confirmation page, then (confirm=1) the replay",
                {
                    "csrf": {"type": "string"},
                    "event_id": {"type": "array", "items": EVENT_ID, "minItems": 1},
                    "failed": {
                        "type": "string",
                        "description": "`1`: every failed event in "
                        "the since/until window, not event_id.",
                    },
                    "since": TIME_VALUE,
                    "until": TIME_QUERY,
                    "type": TEXT,
                    "force": {"type": "string", "description": "`1`: with force."},
                    "allow_stale": {
                        "type": "string",
                        "description": "`1`: push even events that were too old when they arrived.",
                    },
                    "confirm": {"type": "string", "description": "`1`: replay (else a dry run)."},
                },
                {
                    "200": _html("The dry run, with a confirm button."),
                    "303": {"description": "Replayed: back to the event or the list."},
                    "400": _html("Nothing chosen, or a bad time."),
                    "403": _html("A stale form (CSRF)."),
                    "404": _html("No such event."),
                },
                rules={
                    "oneOf": [
                        {"required": ["failed", "since"], "properties": {"failed": {"const": "1"}}},
                        {
                            "required": ["event_id"],
                            "properties": {"failed": {"not": {"const": "1"}}},
                        },
                    ]
                },
            )
        },
    },
    "components": {
        "securitySchemes": {
            "adminToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "callpush's `admin_token` setting.",
            },
            "streamToken": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": (
                    "A Stream user token (acts for its user) or server token (for any user), "
                    "HS256 with the app's API secret; it acts only inside that app."
                ),
            },
            "streamSignature": {
                "type": "apiKey",
                "in": "header",
                "name": "X-Signature",
                "description": "hex HMAC-SHA256 of the uncompressed body with the API secret.",
            },
            "streamApiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
            "dashboardSession": {"type": "apiKey", "in": "cookie", "name": "callpush_dashboard"},
        },
        "parameters": {
            "UserIdQuery": {
                "name": "user_id",
                "in": "query",
                "description": "Required with a server token; a user token's own id otherwise.",
                "schema": USER_ID,
            },
            "AppFilter": {
                "name": "app",
                "in": "query",
                "description": (
                    "Only this Stream app's (a configured API key; 404 when none has it): "
                    "call and user ids are only unique within an app."
                ),
                "schema": {"type": "string", "maxLength": 64},
            },
            "EventId": {
                "name": "event_id",
                "in": "path",
                "required": True,
                "schema": EVENT_ID,
            },
            "UserIdPath": {
                "name": "user_id",
                "in": "path",
                "required": True,
                "schema": {**USER_ID, "examples": ["bob"]},
            },
            "CallCid": {
                "name": "call_cid",
                "in": "path",
                "required": True,
                "schema": {**TEXT, "examples": ["default:123"]},
            },
        },
        "responses": {
            "Error": _json(_ref("Error"), "An error."),
            "Unauthorized": _json(_ref("Error"), "Missing or invalid admin token."),
            "AdminOff": _json(
                _ref("Error"),
                "No admin token is configured (the API is off), or what the request names "
                "does not exist (an event, or an `app` that is no configured API key).",
            ),
            "StorageDown": _json(_ref("Error"), "The database is unavailable."),
            "BadInput": _json(_ref("Error"), "A bad query, path or body value; `field` names it."),
            "TooManyFailures": {
                **_json(_ref("Error"), "Too many failed admin tokens from this client."),
                "headers": RETRY_AFTER,
            },
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {"type": "string"},
                    "field": {"type": "string", "description": "The body or query field at fault."},
                },
            },
            "StreamEvent": {
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": {"type": "string", "examples": ["call.ring"]},
                    "call_cid": {"type": "string"},
                    "created_at": {"type": ["string", "integer"]},
                },
                "additionalProperties": True,
            },
            "WebhookAnswer": {
                "type": "object",
                "required": ["status", "event_id"],
                "properties": {
                    "status": {
                        "type": "string",
                        "enum": ["accepted", "duplicate", "ignored", "processed", "failed"],
                    },
                    "event_id": {"type": "integer"},
                    "reason": {
                        **_nullable("string"),
                        "description": "Why it is ignored, processed already or failed.",
                    },
                },
            },
            "DeviceRegistration": {
                "type": "object",
                "required": ["token", "platform"],
                "additionalProperties": False,
                "properties": {
                    "token": {"type": "string", "maxLength": 512, "pattern": PRINTABLE_ASCII},
                    "platform": {"type": "string", "enum": ["apns", "fcm"]},
                    "voip": {
                        "type": "boolean",
                        "default": False,
                        "description": "A PushKit token: APNs only.",
                    },
                    "app_id": {
                        "type": ["string", "null"],
                        "maxLength": 255,
                        "pattern": PRINTABLE_ASCII,
                        "description": "APNs: the app's bundle id (without .voip); "
                        "default: its provider's bundle_id.",
                    },
                    "push_provider_name": {
                        "type": ["string", "null"],
                        "maxLength": 36,
                        "pattern": PRINTABLE_ASCII,
                        "description": "One of the app's configured push providers of the "
                        "platform; default: the app's default provider.",
                    },
                    "user_id": {**USER_ID, "type": ["string", "null"]},
                },
                "allOf": [
                    {
                        "if": {"properties": {"voip": {"const": True}}, "required": ["voip"]},
                        "then": {"properties": {"platform": {"const": "apns"}}},
                    },
                    # What worker/delivery/push_tokens.py checks, per platform.
                    {
                        "if": {"properties": {"platform": {"const": "apns"}}},
                        "then": {"properties": {"token": {"pattern": APNS_TOKEN_PATTERN}}},
                    },
                    {
                        "if": {"properties": {"platform": {"const": "fcm"}}},
                        "then": {"properties": {"token": {"pattern": FCM_TOKEN_PATTERN}}},
                    },
                    # And the bundle id rules of worker/foundation/apns_topics.py (an FCM app_id is
                    # free).
                    {
                        "if": {"properties": {"platform": {"const": "apns"}}},
                        "then": {"properties": {"app_id": {"pattern": BUNDLE_ID_PATTERN}}},
                    },
                ],
            },
            "Device": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "api_key": {"type": "string", "description": "The Stream app."},
                    "user_id": {"type": "string"},
                    "platform": {"type": "string", "enum": ["apns", "fcm"]},
                    "token": {"type": "string"},
                    "voip": {"type": "boolean"},
                    "app_id": _nullable("string"),
                    "push_provider_name": _nullable("string"),
                    "source": {"type": "string", "enum": ["local", "stream"]},
                    "created_at": NULLABLE_TIMESTAMP,
                    "disabled": {"type": "boolean"},
                    "disabled_at": NULLABLE_TIMESTAMP,
                    "disabled_reason": _nullable("string"),
                },
            },
            "PreferenceChange": {
                "type": "object",
                "required": ["call_pushes"],
                "additionalProperties": False,
                "properties": {
                    "call_pushes": {"type": "string", "enum": ["on", "off"]},
                    "until": {
                        **NULLABLE_TIMESTAMP,
                        "description": "Only with `off`; in the future.",
                    },
                    "user_id": {**USER_ID, "type": ["string", "null"]},
                },
                "if": {"properties": {"call_pushes": {"const": "on"}}},
                "then": {"properties": {"until": {"type": "null"}}},
            },
            "ReceiptConfirmation": {
                "type": "object",
                "required": ["receipt_id"],
                "additionalProperties": False,
                "properties": {
                    "receipt_id": {
                        "type": "string",
                        "pattern": "^[0-9a-f]{32}$",
                        "description": "The push's `callpush_receipt_id`, as it came.",
                    }
                },
            },
            "Receipt": {
                "type": "object",
                "required": ["receipt_id", "received_at", "latency_ms", "duplicate"],
                "properties": {
                    "receipt_id": {"type": "string"},
                    "event_id": {"type": "integer"},
                    "platform": {"type": "string", "enum": ["apns", "fcm"]},
                    "kind": {"type": "string", "enum": ["voip", "alert", "data"]},
                    "received_at": {
                        **TIMESTAMP,
                        "description": "When the (first) receipt arrived.",
                    },
                    "latency_ms": {
                        "type": "number",
                        "description": "From the webhook's arrival to the receipt's.",
                    },
                    "duplicate": {"type": "boolean", "description": "Recorded before."},
                },
            },
            "Preference": {
                "type": "object",
                "properties": {
                    "user_id": {"type": "string"},
                    "call_pushes": {"type": "string", "enum": ["on", "off"]},
                    "until": NULLABLE_TIMESTAMP,
                    "updated_at": NULLABLE_TIMESTAMP,
                },
            },
            "Readiness": {
                "type": "object",
                "required": ["status", "checks"],
                "properties": {
                    "status": {"type": "string", "enum": ["ready", "unavailable"]},
                    "checks": {
                        "type": "object",
                        "description": "Per dependency (database, broker): `ok` or what failed.",
                        "additionalProperties": {"type": "string"},
                    },
                },
            },
            "EventSummary": {
                "type": "object",
                "required": ["id", "event_type", "status", "received_at", "pushes"],
                "properties": {
                    "id": {"type": "integer"},
                    "api_key": {"type": "string", "description": "The Stream app."},
                    "event_type": {"type": "string"},
                    "call_cid": _nullable("string"),
                    "status": EVENT_STATUS,
                    "status_reason": _nullable("string"),
                    "received_at": TIMESTAMP,
                    "processed_at": NULLABLE_TIMESTAMP,
                    "replays": {"type": "integer"},
                    "pushes": PUSH_COUNTS,
                    "reach": REACH,
                },
            },
            "Reach": {
                "type": "object",
                "required": ["recipients", "reached", "unconfirmed", "summary"],
                "properties": {
                    "recipients": {
                        "type": "integer",
                        "minimum": 0,
                        "description": "Users with a recorded outcome: a push or a skipped row.",
                    },
                    "reached": {
                        "type": "integer",
                        "minimum": 0,
                        "description": (
                            "Of them, users with a push the provider accepted (`sent`). 0 for a "
                            "push event is a problem: a ring that rang nobody."
                        ),
                    },
                    "unconfirmed": {
                        "type": "integer",
                        "minimum": 0,
                        "description": (
                            "Users with a ring whose answer was lost (`unconfirmed`): it may "
                            "have rung; not counted as reached."
                        ),
                    },
                    "summary": {
                        "type": "string",
                        "description": "`reached N of M recipients`, `rang nobody (M recipients)`.",
                    },
                },
            },
            "Delivery": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "device_id": _nullable("integer"),
                    "user_id": {"type": "string"},
                    "platform": {
                        "type": "string",
                        "enum": ["apns", "fcm", ""],
                        "description": "Empty on a recipient's own row (no device, no push).",
                    },
                    "kind": {
                        "type": "string",
                        "enum": ["voip", "alert", "data", ""],
                        "description": (
                            "Empty on a recipient's own row: a `skipped` recipient who got no "
                            "push, with the reason (muted, no usable or active token)."
                        ),
                    },
                    "token_hint": {"type": "string", "description": "Redacted."},
                    "provider": {"type": "string"},
                    "status": DELIVERY_STATUS,
                    "reason": _nullable("string"),
                    "status_code": _nullable("integer"),
                    "attempts": {"type": "integer"},
                    "created_at": TIMESTAMP,
                    "claimed_at": TIMESTAMP,
                    "finished_at": NULLABLE_TIMESTAMP,
                    "latency_ms": {
                        "type": ["number", "null"],
                        "description": "From the webhook's arrival to the provider's answer.",
                    },
                    "phone_received_at": {
                        **NULLABLE_TIMESTAMP,
                        "description": "The phone's receipt (POST /receipts); null: none came.",
                    },
                    "phone_latency_ms": {
                        "type": ["number", "null"],
                        "description": "From the webhook's arrival to the phone's receipt.",
                    },
                },
            },
            "EventDetail": {
                "type": "object",
                "required": ["id", "event_type", "status", "deliveries", "pushes"],
                "properties": {
                    "id": {"type": "integer"},
                    "webhook_id": {"type": "string"},
                    "api_key": {"type": "string"},
                    "event_type": {"type": "string"},
                    "call_cid": _nullable("string"),
                    "session_id": _nullable("string"),
                    "event_created_at": NULLABLE_TIMESTAMP,
                    "received_at": TIMESTAMP,
                    "attempt": {"type": "integer"},
                    "status": EVENT_STATUS,
                    "status_reason": _nullable("string"),
                    "processing_attempts": {"type": "integer"},
                    "replays": {"type": "integer"},
                    "replay_force": {"type": "boolean"},
                    "processed_at": NULLABLE_TIMESTAMP,
                    "recipients": {
                        "type": ["array", "null"],
                        "items": {"type": "string"},
                        "description": "User ids the event was for, when known.",
                    },
                    "deliveries": {"type": "array", "items": _ref("Delivery")},
                    "pushes": PUSH_COUNTS,
                    "reach": REACH,
                    "body": {"description": "The stored Stream event."},
                },
            },
            "TraceEntry": {
                "type": "object",
                "required": ["at", "kind", "event_id", "event_type", "summary"],
                "properties": {
                    "at": TIMESTAMP,
                    "kind": {
                        "type": "string",
                        "enum": ["webhook", "recipients", "push", "phone", "device"],
                        "description": (
                            "`phone`: the phone's receipt of a push (`latency_ms` from the "
                            "webhook); `device`: a recipient who got no push, with their "
                            "devices' state now (none, disabled, moved to another user)."
                        ),
                    },
                    "event_id": {"type": "integer"},
                    "event_type": {"type": "string"},
                    "summary": {"type": "string"},
                    "status": _nullable("string"),
                    "user_id": _nullable("string"),
                    "platform": _nullable("string"),
                    "push_kind": _nullable("string"),
                    "token_hint": _nullable("string"),
                    "reason": _nullable("string"),
                    "latency_ms": _nullable("number"),
                    "api_key": _nullable("string"),
                    "reach": REACH,
                },
            },
            "DeviceSummary": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "api_key": {"type": "string", "description": "The Stream app."},
                    "user_id": {"type": "string"},
                    "platform": {"type": "string", "enum": ["apns", "fcm"]},
                    "voip": {"type": "boolean"},
                    "token_hint": {"type": "string", "description": "Redacted."},
                    "app_id": _nullable("string"),
                    "push_provider_name": _nullable("string"),
                    "source": {"type": "string"},
                    "created_at": TIMESTAMP,
                    "disabled_at": NULLABLE_TIMESTAMP,
                    "disabled_reason": _nullable("string"),
                    "moved_to_user_id": _nullable(
                        "string", description="The user of the app who registered the token since."
                    ),
                    "last_push_status": {"oneOf": [DELIVERY_STATUS, {"type": "null"}]},
                    "last_push_at": NULLABLE_TIMESTAMP,
                    "last_push_event_id": _nullable("integer"),
                },
            },
            "UserEvent": {
                "type": "object",
                "required": ["id", "event_type", "status", "received_at", "roles", "pushes"],
                "properties": {
                    "id": {"type": "integer"},
                    "api_key": {"type": "string", "description": "The Stream app."},
                    "event_type": {"type": "string"},
                    "call_cid": _nullable("string"),
                    "status": EVENT_STATUS,
                    "status_reason": _nullable("string"),
                    "received_at": TIMESTAMP,
                    "roles": {
                        "type": "array",
                        "items": {
                            "type": "string",
                            "enum": ["actor", "caller", "member", "recipient"],
                        },
                        "description": (
                            "`caller`: created the call or sent the ring; `actor`: accepted, "
                            "rejected or ended it; `member`: listed in the event; `recipient`: "
                            "pushed to, or in the fan-out's recipients."
                        ),
                    },
                    "pushes": {
                        "type": "array",
                        "items": _ref("Delivery"),
                        "description": "Every push to one of the user's devices.",
                    },
                    "no_push": _nullable(
                        "string",
                        description="A recipient with no push recorded: why (muted, devices).",
                    ),
                },
            },
            "UserActivity": {
                "type": "object",
                "required": ["user_id", "since", "events", "next_before"],
                "properties": {
                    "user_id": {"type": "string"},
                    "api_key": _nullable("string"),
                    "since": TIMESTAMP,
                    "until": NULLABLE_TIMESTAMP,
                    "events": {"type": "array", "items": _ref("UserEvent")},
                    "next_before": _nullable(
                        "integer", description="`before` for the next (older) page; null: last."
                    ),
                },
            },
            "UserOverview": {
                "type": "object",
                "required": ["user_id", "devices", "preferences", "activity"],
                "properties": {
                    "user_id": {"type": "string"},
                    "api_key": _nullable("string"),
                    "devices": {"type": "array", "items": _ref("DeviceSummary")},
                    "preferences": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "api_key": {"type": "string"},
                                "muted": {"type": "boolean"},
                                "muted_until": NULLABLE_TIMESTAMP,
                                "muted_now": {"type": "boolean"},
                                "updated_at": TIMESTAMP,
                            },
                        },
                    },
                    "activity": _ref("UserActivity"),
                },
            },
            "ReplayRequest": {
                "type": "object",
                "description": (
                    'Either `event_ids`, or `"failed": true` with `since` (and optionally '
                    "`until`, `type`) for every failed event received in that window."
                ),
                "additionalProperties": False,
                "properties": {
                    "event_ids": {
                        "type": "array",
                        "items": EVENT_ID,
                        "minItems": 1,
                        "maxItems": 10_000,
                    },
                    "failed": {"type": "boolean", "description": "Every failed event in a window."},
                    "since": TIME_VALUE,
                    "until": {**TIME_QUERY, "type": ["string", "null"]},
                    "type": {**TEXT, "type": ["string", "null"]},
                    "app": {
                        **TEXT,
                        "type": ["string", "null"],
                        "description": "With `failed`: one app's only.",
                    },
                    "dry_run": {"type": "boolean", "default": False},
                    "force": {"type": "boolean", "default": False},
                    "allow_stale": {
                        "type": "boolean",
                        "default": False,
                        "description": "Push even events that arrived stale (never pushed).",
                    },
                },
                "oneOf": [
                    {
                        "required": ["event_ids"],
                        "properties": {"failed": {"const": False}},
                        "not": {
                            "anyOf": [
                                {"required": ["since"]},
                                {"required": ["until"]},
                                {"required": ["type"]},
                                {"required": ["app"]},
                            ]
                        },
                    },
                    {
                        "required": ["failed", "since"],
                        "properties": {"failed": {"const": True}},
                        "not": {"required": ["event_ids"]},
                    },
                ],
            },
            "ReplayPlan": {
                "type": "object",
                "properties": {
                    "dry_run": {"const": True},
                    "force": {"type": "boolean"},
                    "allow_stale": {"type": "boolean"},
                    "devices": {"type": "integer", "description": "Pushes to re-send."},
                    "unknown": {"type": "array", "items": {"type": "integer"}},
                    "events": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "event_id": {"type": "integer"},
                                "event_type": {"type": "string"},
                                "call_cid": _nullable("string"),
                                "status": EVENT_STATUS,
                                "skipped": {"type": "integer"},
                                "ring_over": {"type": "boolean"},
                                "stale": {
                                    **_nullable("string"),
                                    "description": "Why it is not pushed (it arrived stale).",
                                },
                                "resend": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "user_id": {"type": "string"},
                                            "platform": {"type": "string"},
                                            "token_hint": {"type": "string"},
                                            "previous_status": DELIVERY_STATUS,
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
            "ReplayResult": {
                "type": "object",
                "properties": {
                    "dry_run": {"const": False},
                    "force": {"type": "boolean"},
                    "devices": {"type": "integer"},
                    "reopened": {"type": "array", "items": {"type": "integer"}},
                    "unknown": {"type": "array", "items": {"type": "integer"}},
                    "not_queued": {
                        "type": "array",
                        "items": {"type": "integer"},
                        "description": "Reopened; the inbox sweeper queues them later.",
                    },
                },
            },
        },
    },
}


def document_for(settings: Settings, version: str = UNKNOWN) -> dict[str, Any]:
    """``OPENAPI`` with ``push_provider_name`` limited, per platform, to the names this
    deployment's apps configure (none configured: it can only be null), and the running
    ``version`` as the document's."""
    document = copy.deepcopy(OPENAPI)
    document["info"]["version"] = version
    registration = document["components"]["schemas"]["DeviceRegistration"]
    for platform in ("apns", "fcm"):
        names = sorted(
            {
                name
                for app in settings.apps
                for name in (app.apns_providers if platform == "apns" else app.fcm_providers)
            }
        )
        registration["allOf"].append(
            {
                "if": {"properties": {"platform": {"const": platform}}, "required": ["platform"]},
                "then": {"properties": {"push_provider_name": {"enum": [*names, None]}}},
            }
        )
    return document


@blueprint.get("/openapi.json")
def openapi_json() -> ResponseReturnValue:
    return jsonify(document_for(receiver().settings, current_app.config["CALLPUSH_VERSION"]))

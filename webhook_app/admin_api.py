"""The admin HTTP API: the event log, replays and device lookup, for operators' scripts.

    GET  /admin/events              ?app= &status= &type= &call= &user= &since= &until= &limit=
    GET  /admin/events/<id>
    POST /admin/replay              {"event_ids": [...]} | {"failed": true, "since", "until"?,
                                     "type"?, "app"?}, "dry_run"?, "force"?
    GET  /admin/devices             ?app= &user_id= &limit=
    GET  /admin/calls/<cid>/trace   ?app=
    GET  /admin/users/<user_id>     ?app= &since= &until= &limit= &before=

``app`` is a configured Stream app's API key: call ids and user ids are only unique within an
app (each app is a tenant).

``Authorization: Bearer <admin token>`` (constant-time compare; 401 without it, 429 with
Retry-After once a client has failed too often: webhook_app.access_throttle).  With no admin
token configured every route answers 404.  JSON in and out; device tokens only redacted; bad
input is a 400 naming the field (webhook_app.operator_input).  The handlers are thin: the work
is in worker.ops.event_log and worker.ops.replay_jobs.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue

from webhook_app import admin_auth, api_errors
from webhook_app.api_errors import ApiError
from webhook_app.api_models import ReplayRequest, event_log_time, validated
from webhook_app.operator_input import (
    bounded_int,
    check_query,
    json_body,
    json_text_problem,
    stored_text,
    user_id_text,
)
from webhook_app.receiver import receiver
from worker.ops import event_log, user_activity
from worker.ops.replay_jobs import (
    ReplayPlan,
    describe_replay,
    failed_event_ids,
    replay_events,
)
from worker.storage.models import utcnow

log = logging.getLogger("callpush.admin")
blueprint = Blueprint("admin_api", __name__, url_prefix="/admin")
api_errors.register(blueprint, log=log, challenge='Bearer realm="callpush-admin"')


@blueprint.before_request
def _authenticate() -> None:
    expected = admin_auth.configured_token()
    if expected is None:
        raise ApiError(404, "the admin API is off: no admin token is configured")
    throttle, client = admin_auth.throttle(), admin_auth.client()
    wait = throttle.retry_after(client)
    if wait:
        raise ApiError(429, "too many failed attempts: retry later", retry_after=wait)
    presented = admin_auth.bearer_token(request.headers.get("Authorization"))
    if not presented or not admin_auth.token_matches(presented, expected):
        throttle.record_failure(client)
        log.warning("admin API: missing or invalid admin token from %s", client)
        raise ApiError(401, "missing or invalid admin token")
    check_query()


@blueprint.after_request
def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.get("/events")
def list_events() -> ResponseReturnValue:
    args = request.args
    status = args.get("status")
    if status is not None and status not in event_log.EVENT_STATUSES:
        raise ApiError(
            400, f"status must be one of {', '.join(event_log.EVENT_STATUSES)}", field="status"
        )
    user_id = user_id_text(args.get("user", ""), "user") or None
    since = event_log_time(args.get("since"), "since")
    if user_id is not None and since is None:
        # The search by user reads the window's stored bodies: always a bounded window.
        since = utcnow() - user_activity.DEFAULT_WINDOW
    with receiver().db.transaction() as session:
        found = event_log.list_events(
            session,
            status=status,
            event_type=stored_text(args.get("type", ""), "type") or None,
            call_cid=stored_text(args.get("call", ""), "call") or None,
            since=since,
            until=event_log_time(args.get("until"), "until"),
            limit=_limit(args.get("limit"), default=100),
            api_key=_app(args.get("app")),
            user_id=user_id,
        )
    return jsonify(events=event_log.as_json(found))


@blueprint.get("/users/<user_id>")
def user(user_id: str) -> ResponseReturnValue:
    """A user's devices, call-push preferences and the events that concerned them (newest
    first, paged by ``before``), each with every push to each of their devices."""
    user_id_text(user_id, "user_id")
    args = request.args
    api_key = _app(args.get("app"))
    since = event_log_time(args.get("since"), "since") or utcnow() - user_activity.DEFAULT_WINDOW
    before_text = args.get("before")
    before = (
        bounded_int(before_text, "before", 1, event_log.MAX_ID) if before_text is not None else None
    )
    with receiver().db.transaction() as session:
        overview = user_activity.user_overview(
            session,
            user_id,
            since,
            event_log_time(args.get("until"), "until"),
            api_key,
            limit=_limit(args.get("limit"), default=user_activity.DEFAULT_LIMIT),
            before=before,
        )
    return jsonify(event_log.as_json(overview))


@blueprint.get("/events/<int:event_id>")
def show_event(event_id: int) -> ResponseReturnValue:
    with receiver().db.transaction() as session:
        detail = event_log.event_detail(session, event_id)
    if detail is None:
        raise ApiError(404, f"no event {event_id}")
    return jsonify(event_log.as_json(detail))


@blueprint.post("/replay")
def replay() -> ResponseReturnValue:
    body = json_body()
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    problem = json_text_problem(body)
    if problem is not None:
        raise problem
    asked = validated(ReplayRequest, body)
    dry_run, force, allow_stale = asked.dry_run, asked.force, asked.allow_stale
    api_key = _app(asked.app)
    ctx = receiver()
    with ctx.db.transaction() as session:
        if asked.event_ids is not None:
            ids = asked.event_ids
        else:
            assert asked.since is not None  # ReplayRequest: "failed" needs "since"
            ids = failed_event_ids(session, asked.since, asked.until, asked.type, api_key)
        plan = describe_replay(
            session,
            ids,
            force,
            ctx.settings.ring.default_timeout_ms,
            max_event_age=timedelta(seconds=ctx.settings.intake.max_event_age_seconds),
            allow_stale=allow_stale,
        )
    if dry_run:
        return jsonify(dry_run=True, **plan_json(plan))
    outcome = replay_events(
        ctx.db,
        [p.replay.event_id for p in plan.events],
        force,
        ctx.celery.handoff,
        allow_stale=allow_stale,
    )
    log.info("admin replay: %d events reopened (force=%s)", len(outcome.reopened), force)
    return jsonify(
        dry_run=False,
        force=force,
        reopened=outcome.reopened,
        unknown=plan.unknown,
        not_queued=outcome.not_queued,
        devices=plan.devices,
    ), 202


@blueprint.get("/devices")
def devices() -> ResponseReturnValue:
    user_id = stored_text(request.args.get("user_id", ""), "user_id") or None
    api_key = _app(request.args.get("app"))
    with receiver().db.transaction() as session:
        found = event_log.find_devices(
            session, user_id, limit=_limit(request.args.get("limit"), default=100), api_key=api_key
        )
    return jsonify(devices=event_log.as_json(found))


@blueprint.get("/calls/<call_cid>/trace")
def trace(call_cid: str) -> ResponseReturnValue:
    stored_text(call_cid, "call_cid")
    api_key = _app(request.args.get("app"))
    with receiver().db.transaction() as session:
        entries = event_log.call_trace(session, call_cid, api_key)
    return jsonify(call_cid=call_cid, entries=event_log.as_json(entries))


def plan_json(plan: ReplayPlan) -> dict[str, Any]:
    return {
        "force": plan.force,
        "allow_stale": plan.allow_stale,
        "events": [
            {
                "event_id": p.replay.event_id,
                "event_type": p.replay.event_type,
                "call_cid": p.replay.call_cid,
                "status": p.replay.status,
                "resend": event_log.as_json(p.replay.resend),
                "skipped": p.replay.skipped,
                "ring_over": p.ring_over,
                "stale": p.stale,
            }
            for p in plan.events
        ],
        "unknown": plan.unknown,
        "devices": plan.devices,
    }


# --- argument parsing -------------------------------------------------------------------------


def _app(value: Any) -> str | None:
    """The ``app`` filter: unset, or the API key of a configured Stream app.

    Any string is a well-formed app filter, so an API key that no configured app has is a 404
    (the app named does not exist here), not a 400: the request was valid, its target is not.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ApiError(400, "app must be a string", field="app")
    if receiver().settings.app_for_key(value) is None:
        raise ApiError(404, "no configured Stream app has this API key", field="app")
    return value


def _limit(value: str | None, default: int) -> int:
    if value is None:
        return default
    return bounded_int(value, "limit", 1, event_log.MAX_LIMIT)

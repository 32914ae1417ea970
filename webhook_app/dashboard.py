"""The ops dashboard: a few server-rendered pages behind the admin token (no JavaScript).

    /dashboard/login            the token, once; sets an HttpOnly, SameSite=Strict cookie
    /dashboard/                 recent events with filters, pushes by result over the last hour
    /dashboard/events/<id>      one event, its recipients and deliveries, a replay button
    /dashboard/replay    POST   a dry run first (what would be re-sent), then the replay
    /dashboard/calls/<cid>      one call's timeline

The cookie holds no token (see webhook_app.admin_auth); every form carries a CSRF token derived
from the admin token and the session.  The pages read through worker.event_log and replay
through worker.replay_jobs, like the CLI and the admin API.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import SQLAlchemyError

from webhook_app import admin_auth
from webhook_app.app import receiver
from worker import event_log
from worker.replay_jobs import MAX_SELECTED, describe_replay, failed_event_ids, replay_events
from worker.storage.models import utcnow
from worker.tasks import enqueue_replay

log = logging.getLogger("callpush.dashboard")
blueprint = Blueprint("dashboard", __name__, url_prefix="/dashboard", template_folder="templates")

COOKIE = "callpush_dashboard"
PUBLIC_ENDPOINTS = frozenset({"dashboard.login", "dashboard.login_form"})
DEFAULT_SINCE = "24h"
# Inline CSS only, no scripts, forms post to this site, never framed.
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


class PageError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@blueprint.errorhandler(PageError)
def _page_error(error: PageError) -> ResponseReturnValue:
    return render_template("dashboard/message.html", message=error.message), error.status


@blueprint.errorhandler(SQLAlchemyError)
def _storage_error(error: SQLAlchemyError) -> ResponseReturnValue:
    log.error("dashboard %s: storage error %s", request.path, type(error).__name__)
    return render_template("dashboard/message.html", message="The database is unavailable."), 503


@blueprint.before_request
def _require_login() -> ResponseReturnValue | None:
    if admin_auth.configured_token() is None:
        raise PageError(404, "The dashboard is off: no admin token is configured.")
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if _session() is None:
        if request.method != "GET":
            raise PageError(401, "Your session has ended: log in again.")
        return redirect(url_for("dashboard.login_form", next=request.full_path.rstrip("?")))
    return None


@blueprint.after_request
def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.app_template_filter("dashboard_time")
def _utc(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value is not None else "-"


@blueprint.app_template_filter("dashboard_latency")
def _latency(value: float | None) -> str:
    return event_log.format_latency(value)


# --- login ------------------------------------------------------------------------------------


@blueprint.get("/login")
def login_form() -> ResponseReturnValue:
    return render_template("dashboard/login.html", next=_next_path(), error=None)


@blueprint.post("/login")
def login() -> ResponseReturnValue:
    expected = admin_auth.configured_token()
    assert expected is not None
    presented = request.form.get("token", "").strip()
    if not presented or not admin_auth.token_matches(presented, expected):
        log.warning("dashboard login refused from %s", request.remote_addr)
        error = "That is not the admin token."
        return render_template("dashboard/login.html", next=_next_path(), error=error), 401
    response = redirect(_next_path())
    response.set_cookie(
        COOKIE,
        admin_auth.new_session(expected),
        max_age=admin_auth.SESSION_SECONDS,
        path=url_for("dashboard.index"),
        httponly=True,
        samesite="Strict",
        secure=request.is_secure,
    )
    return response


@blueprint.post("/logout")
def logout() -> ResponseReturnValue:
    _check_csrf()
    response = redirect(url_for("dashboard.login_form"))
    response.delete_cookie(COOKIE, path=url_for("dashboard.index"))
    return response


# --- pages ------------------------------------------------------------------------------------


@blueprint.get("/")
def index() -> ResponseReturnValue:
    args = request.args
    filters = {
        "status": args.get("status", ""),
        "type": args.get("type", "").strip(),
        "call": args.get("call", "").strip(),
        "since": args.get("since", DEFAULT_SINCE).strip(),
        "until": args.get("until", "").strip(),
    }
    problems = []
    since = until = None
    try:
        since = event_log.parse_time(filters["since"]) if filters["since"] else None
    except ValueError as error:
        problems.append(f"since: {error}")
    try:
        until = event_log.parse_time(filters["until"]) if filters["until"] else None
    except ValueError as error:
        problems.append(f"until: {error}")
    status = filters["status"] if filters["status"] in event_log.EVENT_STATUSES else None
    with receiver().db.transaction() as session:
        found = event_log.list_events(
            session,
            status=status,
            event_type=filters["type"] or None,
            call_cid=filters["call"] or None,
            since=since,
            until=until,
            limit=200,
        )
        counts = event_log.push_counts(session, utcnow() - timedelta(hours=1))
    return render_template(
        "dashboard/events.html",
        events=found,
        filters=filters,
        statuses=event_log.EVENT_STATUSES,
        counts=counts,
        problems=problems,
        notice=_notice(),
        csrf=_csrf(),
        format_pushes=event_log.format_pushes,
    )


@blueprint.get("/events/<int:event_id>")
def event(event_id: int) -> ResponseReturnValue:
    with receiver().db.transaction() as session:
        detail = event_log.event_detail(session, event_id)
    if detail is None:
        raise PageError(404, f"There is no event {event_id}.")
    body = event_log.readable_json(detail.body, sort_keys=True)
    return render_template(
        "dashboard/event.html",
        event=detail,
        body=body,
        notice=_notice(),
        csrf=_csrf(),
        format_pushes=event_log.format_pushes,
    )


@blueprint.get("/calls/<call_cid>")
def call(call_cid: str) -> ResponseReturnValue:
    with receiver().db.transaction() as session:
        entries = event_log.call_trace(session, call_cid)
    start = entries[0].at if entries else None
    return render_template(
        "dashboard/trace.html", call_cid=call_cid, entries=entries, start=start, csrf=_csrf()
    )


@blueprint.post("/replay")
def replay() -> ResponseReturnValue:
    """A dry run (the confirmation page) unless ``confirm`` is set; the confirmation page posts
    back exactly the event ids it showed."""
    _check_csrf()
    form = request.form
    force = form.get("force") == "1"
    allow_stale = form.get("allow_stale") == "1"
    ctx = receiver()
    with ctx.db.transaction() as session:
        ids = _replay_selection(session)
        plan = describe_replay(
            session,
            ids,
            force,
            ctx.settings.ring.default_timeout_ms,
            max_event_age=timedelta(seconds=ctx.settings.intake.max_event_age_seconds),
            allow_stale=allow_stale,
        )
    if not plan.events:
        raise PageError(404, "Nothing to replay: no such event.")
    if form.get("confirm") != "1":
        return render_template("dashboard/replay_confirm.html", plan=plan, csrf=_csrf())
    outcome = replay_events(
        ctx.db,
        [p.replay.event_id for p in plan.events],
        force,
        lambda event_id: enqueue_replay(ctx.celery, event_id),
        allow_stale=allow_stale,
    )
    log.info("dashboard replay: %d events reopened (force=%s)", len(outcome.reopened), force)
    notice = {"replayed": str(len(outcome.reopened)), "devices": str(plan.devices)}
    if outcome.not_queued:
        notice["not_queued"] = str(len(outcome.not_queued))
    if len(plan.events) == 1:
        target = url_for("dashboard.event", event_id=plan.events[0].replay.event_id)
    else:
        target = url_for("dashboard.index")
    return redirect(f"{target}?{urlencode(notice)}", code=303)


# --- helpers ----------------------------------------------------------------------------------


def _session() -> str | None:
    token = admin_auth.configured_token()
    cookie = request.cookies.get(COOKIE)
    if token is None or not admin_auth.session_is_valid(cookie, token):
        return None
    return cookie


def _csrf() -> str:
    token, session = admin_auth.configured_token(), _session()
    return admin_auth.csrf_token(token, session) if token and session else ""


def _check_csrf() -> None:
    token, session = admin_auth.configured_token(), _session()
    if (
        not token
        or not session
        or not admin_auth.csrf_is_valid(request.form.get("csrf"), token, session)
    ):
        raise PageError(403, "The form has expired: reload the page and try again.")


def _replay_selection(session: Any) -> list[int]:
    form = request.form
    if form.get("failed") == "1":
        try:
            since = event_log.parse_time(form.get("since", ""))
            until_text = form.get("until", "").strip()
            until = event_log.parse_time(until_text) if until_text else None
        except ValueError as error:
            raise PageError(400, f"Cannot replay: {error}") from None
        return failed_event_ids(session, since, until, form.get("type", "").strip() or None)
    ids = [value for value in form.getlist("event_id") if value.isdigit()]
    if not ids:
        raise PageError(400, "No event to replay was chosen.")
    return [int(value) for value in ids[:MAX_SELECTED]]


def _next_path() -> str:
    """Where to go after logging in: only a path of the dashboard (never another site)."""
    wanted = request.values.get("next", "")
    home = url_for("dashboard.index")
    if wanted.startswith(home) and "//" not in wanted and "\\" not in wanted:
        return wanted
    return home


def _notice() -> dict[str, str]:
    return {k: v for k, v in request.args.items() if k in {"replayed", "devices", "not_queued"}}

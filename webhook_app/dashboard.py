"""The ops dashboard: a few server-rendered pages behind the admin token (no JavaScript).

    /dashboard/login            the token, once; sets an HttpOnly, SameSite=Strict cookie (Secure
                                over https, also behind a trusted proxy); failures throttled
    /dashboard/logout    POST   revokes the session server-side
    /dashboard/                 recent events with filters, pushes by result over the last hour,
                                charts (webhook_app.svg_charts): pushes by result, ring latency,
                                queue depth, each over the last hour and the last day
    /dashboard/events/<id>      one event, its recipients and deliveries, a replay button
    /dashboard/replay    POST   a dry run first (what would be re-sent), then the replay
    /dashboard/calls/<cid>      one call's timeline
    /dashboard/users/<user_id>  one user: devices, preferences, recent events with each outcome
    /dashboard/search           the header's search box: to a call, an event or a user

The cookie names a server-side session and holds no token (see webhook_app.admin_auth); every
form carries a CSRF token derived from the admin token and the session.  Bad input is a 400 page
naming the field (webhook_app.operator_input); stored text that cannot be encoded is shown
escaped.  The pages read through worker.ops.event_log and replay through worker.ops.replay_jobs,
like the CLI and the admin API.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from flask import Blueprint, Response, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import SQLAlchemyError

from webhook_app import admin_auth, svg_charts
from webhook_app.operator_input import (
    InvalidInput,
    bounded_int,
    check_query,
    stored_text,
    user_id_text,
)
from webhook_app.receiver import receiver
from worker.ops import dashboard_charts, event_log, user_activity
from worker.ops.replay_jobs import MAX_SELECTED, describe_replay, failed_event_ids, replay_events
from worker.storage import dashboard_sessions
from worker.storage.models import WebhookEvent, utcnow

log = logging.getLogger("callpush.dashboard")
blueprint = Blueprint("dashboard", __name__, url_prefix="/dashboard", template_folder="templates")

COOKIE = "callpush_dashboard"
PUBLIC_ENDPOINTS = frozenset({"dashboard.login", "dashboard.login_form"})
DEFAULT_SINCE = "24h"
# The event page shows this much of a stored body (the admin API up to 4 MiB: event_log).
BODY_CHARS = 256 * 1024
# `next` after logging in: a path of the dashboard, in printable ASCII (a redirect's Location).
_NEXT = re.compile(r"/dashboard/[\x21-\x7e]*")
_DIGITS = re.compile(r"[0-9]{1,19}")
# The user page shows this many events per page (older ones: the next page).
USER_EVENTS_SHOWN = 50
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


def _page(template: str, status: int = 200, **context: Any) -> Response:
    """A rendered page.  Text from a stored body may hold a lone surrogate, which UTF-8 cannot
    encode: it is written as its escape (``\\ud800``) instead of failing the page."""
    html = render_template(template, csrf=_csrf(), **context)
    return Response(html.encode("utf-8", "backslashreplace"), status, mimetype="text/html")


@blueprint.errorhandler(PageError)
def _page_error(error: PageError) -> ResponseReturnValue:
    return _page("dashboard/message.html", error.status, message=error.message)


@blueprint.errorhandler(InvalidInput)
def _invalid_input(error: InvalidInput) -> ResponseReturnValue:
    return _page("dashboard/message.html", 400, message=f"Cannot show that: {error.message}.")


@blueprint.errorhandler(SQLAlchemyError)
def _storage_error(error: SQLAlchemyError) -> ResponseReturnValue:
    log.error("dashboard %s: storage error %s", request.path, type(error).__name__)
    g.dashboard_session = None  # the session could not be read: no logged-in header
    return _page("dashboard/message.html", 503, message="The database is unavailable.")


@blueprint.before_request
def _require_login() -> ResponseReturnValue | None:
    if admin_auth.configured_token() is None:
        raise PageError(404, "The dashboard is off: no admin token is configured.")
    check_query()
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if _session() is None:
        if request.method != "GET":
            raise PageError(401, "Your session has ended: log in again.")
        return redirect(url_for("dashboard.login_form", next=_next_path(_this_page())))
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
    return _page("dashboard/login.html", next=_next_path(request.values.get("next")), error=None)


@blueprint.post("/login")
def login() -> ResponseReturnValue:
    expected = admin_auth.configured_token()
    assert expected is not None
    next_path = _next_path(request.values.get("next"))
    throttle, client = admin_auth.throttle(), admin_auth.client()
    wait = throttle.retry_after(client)
    if wait:
        error = f"Too many failed attempts from your address: try again in {wait} s."
        refused = _page("dashboard/login.html", 429, next=next_path, error=error)
        refused.headers["Retry-After"] = str(wait)
        return refused
    presented = request.form.get("token", "").strip()
    if not presented or not admin_auth.token_matches(presented, expected):
        throttle.record_failure(client)
        log.warning("dashboard login refused from %s", client)
        error = "That is not the admin token."
        return _page("dashboard/login.html", 401, next=next_path, error=error)
    with receiver().db.transaction() as session:
        cookie = dashboard_sessions.start(
            session, admin_auth.token_fingerprint(expected), admin_auth.SESSION_LIFETIME
        )
    log.info("dashboard login from %s", client)
    response = redirect(next_path)
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=int(admin_auth.SESSION_LIFETIME.total_seconds()),
        path=url_for("dashboard.index"),
        httponly=True,
        samesite="Strict",
        # https as the client sees it: the request's own scheme, or X-Forwarded-Proto from a
        # trusted proxy (settings.trusted_proxies) that terminates TLS.
        secure=request.is_secure,
    )
    return response


@blueprint.post("/logout")
def logout() -> ResponseReturnValue:
    _check_csrf()
    with receiver().db.transaction() as session:
        dashboard_sessions.revoke(session, request.cookies.get(COOKIE))
    g.dashboard_session = None
    response = redirect(url_for("dashboard.login_form"))
    response.delete_cookie(COOKIE, path=url_for("dashboard.index"))
    return response


# --- pages ------------------------------------------------------------------------------------


@blueprint.get("/")
def index() -> ResponseReturnValue:
    args = request.args
    filters = {
        "app": args.get("app", "").strip(),
        "status": args.get("status", ""),
        "type": stored_text(args.get("type", ""), "type").strip(),
        "call": stored_text(args.get("call", ""), "call").strip(),
        "user": user_id_text(args.get("user", ""), "user").strip(),
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
    # An unknown app is reported, and matches nothing (never every app's events).
    api_key = filters["app"] or None
    _app_filter(filters["app"], problems)
    if filters["user"] and since is None:
        # The search by user reads the window's stored bodies: always a bounded window.
        since = utcnow() - user_activity.DEFAULT_WINDOW
    with receiver().db.transaction() as session:
        found = event_log.list_events(
            session,
            status=status,
            event_type=filters["type"] or None,
            call_cid=filters["call"] or None,
            since=since,
            until=until,
            limit=200,
            api_key=api_key,
            user_id=filters["user"] or None,
        )
        counts = event_log.push_counts(session, utcnow() - timedelta(hours=1), api_key)
        charts = _home_charts(session, api_key)
    return _page(
        "dashboard/events.html",
        events=found,
        filters=filters,
        apps=_app_keys(),
        statuses=event_log.EVENT_STATUSES,
        counts=counts,
        charts=charts,
        problems=problems,
        notice=_notice(),
        format_pushes=event_log.format_pushes,
        format_latency=event_log.format_latency,
    )


@blueprint.get("/events/<int:event_id>")
def event(event_id: int) -> ResponseReturnValue:
    with receiver().db.transaction() as session:
        detail = event_log.event_detail(session, event_id)
    if detail is None:
        raise PageError(404, f"There is no event {event_id}.")
    return _page(
        "dashboard/event.html",
        event=detail,
        apps=_app_keys(),
        body=event_log.body_text(detail.body, BODY_CHARS),
        notice=_notice(),
        format_pushes=event_log.format_pushes,
    )


@blueprint.get("/calls/<call_cid>")
def call(call_cid: str) -> ResponseReturnValue:
    stored_text(call_cid, "call_cid")
    problems: list[str] = []
    app = request.args.get("app", "").strip()
    api_key = _app_filter(app, problems)
    if problems:
        raise PageError(400, problems[0])
    with receiver().db.transaction() as session:
        entries = event_log.call_trace(session, call_cid, api_key)
    start = entries[0].at if entries else None
    return _page(
        "dashboard/trace.html",
        call_cid=call_cid,
        app=api_key,
        apps=sorted({e.api_key for e in entries if e.api_key}),
        entries=entries,
        start=start,
    )


@blueprint.get("/users/<user_id>")
def user(user_id: str) -> ResponseReturnValue:
    """Did the user's phone ring: devices, preferences, recent events with each outcome."""
    user_id_text(user_id, "user_id")
    args = request.args
    api_key = _known_app(args.get("app", "").strip())
    filters = {
        "since": args.get("since", DEFAULT_SINCE).strip() or DEFAULT_SINCE,
        "until": args.get("until", "").strip(),
    }
    problems = []
    since = utcnow() - user_activity.DEFAULT_WINDOW
    until = None
    try:
        since = event_log.parse_time(filters["since"])
    except ValueError as error:
        problems.append(f"since: {error}")
    try:
        until = event_log.parse_time(filters["until"]) if filters["until"] else None
    except ValueError as error:
        problems.append(f"until: {error}")
    before_text = args.get("before")
    before = (
        bounded_int(before_text, "before", 1, event_log.MAX_ID) if before_text is not None else None
    )
    with receiver().db.transaction() as session:
        overview = user_activity.user_overview(
            session, user_id, since, until, api_key, limit=USER_EVENTS_SHOWN, before=before
        )
    return _page(
        "dashboard/user.html",
        user=overview,
        app=api_key,
        apps=_app_keys(),
        filters=filters,
        problems=problems,
        before=before,
        now=utcnow(),
        format_latency=event_log.format_latency,
        format_phone_receipt=event_log.format_phone_receipt,
    )


@blueprint.get("/search")
def search() -> ResponseReturnValue:
    """The header's search box: a call id has a ':' (Stream's `type:id`), an event id is
    digits, anything else is a user id.  Digits that are both an existing event and a known
    user get a page to choose."""
    query = stored_text(request.args.get("q", ""), "q").strip()
    api_key = _known_app(request.args.get("app", "").strip())
    if not query:
        return redirect(url_for("dashboard.index"))
    if ":" in query:
        return redirect(url_for("dashboard.call", call_cid=query, app=api_key))
    user_page = url_for("dashboard.user", user_id=query, app=api_key)
    if not _DIGITS.fullmatch(query) or not 1 <= int(query) <= event_log.MAX_ID:
        return redirect(user_page)
    with receiver().db.transaction() as session:
        found = session.get(WebhookEvent, int(query))
        event_id = found.id if found is not None and api_key in (None, found.api_key) else None
        known_user = user_activity.is_known_user(session, query, api_key)
    if event_id is None:
        return redirect(user_page)
    event_page = url_for("dashboard.event", event_id=event_id)
    if not known_user:
        return redirect(event_page)
    return _page("dashboard/search.html", query=query, event_page=event_page, user_page=user_page)


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
        return _page("dashboard/replay_confirm.html", plan=plan)
    outcome = replay_events(
        ctx.db,
        [p.replay.event_id for p in plan.events],
        force,
        ctx.celery.handoff,
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


@dataclass(frozen=True, slots=True)
class ChartPanel:
    """One chart of the home page: its numbers (for the table under it) and its SVG."""

    window: str  # "hour" | "day"
    data: Any
    svg: str


def _home_charts(session: Any, api_key: str | None) -> dict[str, list[ChartPanel]]:
    """Pushes by result, ring latency and queue depth, each over the last hour and the last
    day, for one app (``api_key``) or all."""
    now = utcnow()
    charts: dict[str, list[ChartPanel]] = {"pushes": [], "latency": [], "queue": []}
    for window, (span, step) in (
        ("hour", dashboard_charts.LAST_HOUR),
        ("day", dashboard_charts.LAST_DAY),
    ):
        buckets = dashboard_charts.buckets_until(now, span, step)
        last = f"the last {window}"
        pushes = dashboard_charts.pushes_by_result(session, buckets, api_key)
        title = f"Pushes by result, {last}"
        svg = svg_charts.pushes_chart(pushes, title=title, chart_id=f"pushes-{window}")
        charts["pushes"].append(ChartPanel(window, pushes, svg))
        latency = dashboard_charts.ring_latency(session, buckets, api_key)
        title = f"Ring latency p50 and p99, {last}"
        svg = svg_charts.latency_chart(latency, title=title, chart_id=f"latency-{window}")
        charts["latency"].append(ChartPanel(window, latency, svg))
        queue = dashboard_charts.queue_depth(session, buckets, api_key)
        title = f"Queue depth, {last}"
        svg = svg_charts.queue_chart(queue, title=title, chart_id=f"queue-{window}")
        charts["queue"].append(ChartPanel(window, queue, svg))
    return charts


def _session() -> str | None:
    """The session cookie when it names a live session (looked up once per request)."""
    if "dashboard_session" not in g:
        g.dashboard_session = None
        token = admin_auth.configured_token()
        cookie = request.cookies.get(COOKIE)
        if token is not None and cookie:
            with receiver().db.transaction() as session:
                if dashboard_sessions.is_valid(
                    session, cookie, admin_auth.token_fingerprint(token)
                ):
                    g.dashboard_session = cookie
    found: str | None = g.dashboard_session
    return found


def _csrf() -> str:
    token = admin_auth.configured_token()
    session = g.get("dashboard_session")  # as checked by this request; never queried here
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
        problems: list[str] = []
        api_key = _app_filter(form.get("app", "").strip(), problems)
        if problems:
            raise PageError(400, f"Cannot replay: {problems[0]}")
        event_type = stored_text(form.get("type", ""), "type").strip()
        return failed_event_ids(session, since, until, event_type or None, api_key)
    values = form.getlist("event_id")
    if not values:
        raise PageError(400, "No event to replay was chosen.")
    return [bounded_int(v, "event_id", 1, event_log.MAX_ID) for v in values[:MAX_SELECTED]]


def _app_keys() -> list[str]:
    return [app.api_key for app in receiver().settings.apps]


def _app_filter(value: str, problems: list[str]) -> str | None:
    """The app filter (an API key), or None for every app; an unknown key is a problem."""
    if not value:
        return None
    if receiver().settings.app_for_key(value) is None:
        problems.append("app: not the API key of a configured Stream app")
        return None
    return value


def _known_app(value: str) -> str | None:
    """A page's ``app``: unset, or a configured Stream app's API key (any other: a 404, as the
    admin API answers; the app named does not exist here)."""
    if not value:
        return None
    if receiver().settings.app_for_key(value) is None:
        raise PageError(404, "No configured Stream app has this API key.")
    return value


def _this_page() -> str:
    """The requested path and query as sent (``request.full_path`` decodes the query as UTF-8
    and fails on other bytes)."""
    query = request.query_string.decode("latin-1")
    return f"{quote(request.path)}?{query}" if query else quote(request.path)


def _next_path(wanted: str | None) -> str:
    """Where to go after logging in: only a path of the dashboard (never another site)."""
    home = url_for("dashboard.index")
    wanted = (wanted or "").rstrip("?")
    if _NEXT.fullmatch(wanted) and "//" not in wanted and "\\" not in wanted:
        return wanted
    return home


def _notice() -> dict[str, str]:
    return {k: v for k, v in request.args.items() if k in {"replayed", "devices", "not_queued"}}

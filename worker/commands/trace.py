"""`callpush trace CALL_CID` / `callpush trace --user USER_ID`: the timeline of one call, or
every event that concerned one user ("did Bob's phone get the ring?")."""

from __future__ import annotations

from datetime import datetime

import click

from worker.commands import app_option, check_app
from worker.commands.events import (
    APP_FILTER_HELP,
    EVENT_ID,
    TIME,
    database,
    echo_json,
    echo_line,
)
from worker.foundation.text_escaping import escape_controls
from worker.ops import event_log, user_activity
from worker.storage.models import utcnow

_STYLE = {
    "sent": "green",
    "failed": "red",
    "token_invalid": "red",
    "expired": "yellow",
    "retry": "yellow",
    "unconfirmed": "yellow",
}


@click.command()
@click.argument("call_cid", required=False)
@click.option(
    "--user",
    "user_id",
    default=None,
    metavar="USER_ID",
    help="instead of a call: every event that concerned this user, with each push to each of "
    "their devices",
)
@click.option("--since", type=TIME, default=None, help="with --user: 2h, 2d or ISO 8601 (24h)")
@click.option("--until", type=TIME, default=None, help="with --user: 2h, 2d or ISO 8601")
@click.option(
    "--limit",
    type=click.IntRange(1, event_log.MAX_LIMIT),
    default=user_activity.DEFAULT_LIMIT,
    show_default=True,
    help="with --user: events per page",
)
@click.option(
    "--before", type=EVENT_ID, default=None, help="with --user: the next page (older events)"
)
@app_option(APP_FILTER_HELP + "; call and user ids are only unique within an app")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def trace(
    ctx: click.Context,
    call_cid: str | None,
    user_id: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    before: int | None,
    app: str | None,
    as_json: bool,
) -> None:
    """A call's timeline (CALL_CID), or a user's events (--user): did Bob's phone ring?

    For a call: each webhook, the devices each event resolved to, each push with its outcome
    and the latency from the webhook's arrival to the provider's answer (UTC), each push the
    phone confirmed (=>, when the app sends receipts), and each recipient who got no push with
    their devices' state (e.g. a token that moved to another user).  For a user: each event
    that concerned them (as the caller or a recipient), newest first, with each push to each of
    their devices (and the phone's receipt), or why there was none.

    \b
      callpush trace default:123
      callpush trace --user bob --since 2h
    """
    if (call_cid is None) == (user_id is None):
        raise click.UsageError("give a call cid or --user USER_ID (one of them)")
    if call_cid is not None and (since or until or before):
        raise click.UsageError("--since/--until/--before go with --user")
    api_key = check_app(ctx, app)
    if user_id is not None:
        _user_trace(ctx, user_id, since, until, limit, before, api_key, as_json)
        return
    assert call_cid is not None
    with database(ctx) as db, db.transaction() as session:
        entries = event_log.call_trace(session, call_cid, api_key)
    if as_json:
        echo_json({"call_cid": call_cid, "entries": entries})
        return
    if not entries:
        raise click.ClickException(f"no events for call {call_cid}")
    start = entries[0].at
    apps = sorted({e.api_key for e in entries if e.api_key})
    shown = f", app {apps[0]}" if len(apps) == 1 else f", apps {', '.join(apps)} (--app: one)"
    echo_line(f"call {call_cid}, from {start:%Y-%m-%d} {_clock(start)} UTC{shown}")
    several = len(apps) > 1
    for entry in entries:
        offset = (entry.at - start).total_seconds()
        marker = {"webhook": "<-", "recipients": "  ", "push": "->", "phone": "=>", "device": " x"}[
            entry.kind
        ]
        app = f"[{entry.api_key}] " if several and entry.kind == "webhook" else ""
        line = (
            f"{_clock(entry.at)}  +{offset:8.3f}s  {marker} #{entry.event_id:<6} "
            f"{app}{entry.summary}"
        )
        # A push event that reached nobody is a problem whatever its status says.
        unreached = entry.reach is not None and not entry.reach.reached
        style = "yellow" if unreached else _STYLE.get(entry.status or "")
        click.echo(click.style(escape_controls(line), fg=style))


def _user_trace(
    ctx: click.Context,
    user_id: str,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    before: int | None,
    api_key: str | None,
    as_json: bool,
) -> None:
    since = since or utcnow() - user_activity.DEFAULT_WINDOW
    with database(ctx) as db, db.transaction() as session:
        found = user_activity.user_activity(
            session, user_id, since, until, api_key, limit=limit, before=before
        )
    if as_json:
        echo_json(found)
        return
    scope = f", app {api_key}" if api_key else ""
    end = f"{until:%Y-%m-%d %H:%M:%S}" if until else "now"
    echo_line(
        f"user {user_id}{scope}: {len(found.events)} event(s) from "
        f"{since:%Y-%m-%d %H:%M:%S} to {end} UTC, newest first"
    )
    several = len({e.api_key for e in found.events}) > 1
    for e in found.events:
        app = f"[{e.api_key}] " if several or api_key is None else ""
        reason = f": {e.status_reason}" if e.status_reason else ""
        echo_line(
            f"{e.received_at:%Y-%m-%d} {_clock(e.received_at)}  #{e.id:<6} {app}{e.event_type} "
            f"{e.call_cid or '-'}  as {'/'.join(e.roles)}; {e.status}{reason}"
        )
        for d in e.pushes:
            if not d.kind:  # the recipient's own row: no push at all, and why
                echo_line(f"     x no push: {d.reason or d.status}")
                continue
            why = f" ({d.reason})" if d.reason else ""
            took = event_log.format_latency(d.latency_ms)
            latency = f" after {took}" if d.latency_ms is not None else ""
            line = (
                f"    -> {d.status}{why}{latency}: {d.platform} {d.kind} {d.token_hint} "
                f"via {d.provider}, {d.attempts} attempt(s)"
            )
            click.echo(click.style(escape_controls(line), fg=_STYLE.get(d.status)))
            if d.phone_received_at is not None:
                echo_line(f"    => {event_log.format_phone_receipt(d.phone_latency_ms)}")
        if e.no_push:
            echo_line(f"     x {e.no_push}")
    if not found.events:
        click.echo(f"(no events concerned {escape_controls(user_id)} in that window)")
    if found.next_before is not None:
        click.echo(f"(older events: --before {found.next_before})")


def _clock(moment: datetime) -> str:
    return f"{moment:%H:%M:%S}.{moment.microsecond // 1000:03d}"

"""`callpush trace CALL_CID`: the timeline of one call ("did Bob's phone get the ring?")."""

from __future__ import annotations

from datetime import datetime

import click

from worker import event_log
from worker.commands import app_option, check_app
from worker.commands.events import APP_FILTER_HELP, database, echo_json, echo_line
from worker.text_escaping import escape_controls

_STYLE = {
    "sent": "green",
    "failed": "red",
    "token_invalid": "red",
    "expired": "yellow",
    "retry": "yellow",
    "unconfirmed": "yellow",
}


@click.command()
@click.argument("call_cid")
@app_option(APP_FILTER_HELP + "; call ids are only unique within an app")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def trace(ctx: click.Context, call_cid: str, app: str | None, as_json: bool) -> None:
    """Each webhook of the call, the devices each event resolved to, each push with its
    outcome and the latency from the webhook's arrival to the provider's answer (UTC), and
    each recipient who got no push with their devices' state (e.g. a token that moved to
    another user)."""
    api_key = check_app(ctx, app)
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
        marker = {"webhook": "<-", "recipients": "  ", "push": "->", "device": " x"}[entry.kind]
        app = f"[{entry.api_key}] " if several and entry.kind == "webhook" else ""
        line = (
            f"{_clock(entry.at)}  +{offset:8.3f}s  {marker} #{entry.event_id:<6} "
            f"{app}{entry.summary}"
        )
        # A push event that reached nobody is a problem whatever its status says.
        unreached = entry.reach is not None and not entry.reach.reached
        style = "yellow" if unreached else _STYLE.get(entry.status or "")
        click.echo(click.style(escape_controls(line), fg=style))


def _clock(moment: datetime) -> str:
    return f"{moment:%H:%M:%S}.{moment.microsecond // 1000:03d}"

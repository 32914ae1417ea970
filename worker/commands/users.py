"""`callpush users`: users' call-push preferences (mute, unmute, show)."""

from __future__ import annotations

from datetime import datetime

import click

from worker.commands import app_option, open_database, open_existing_database, resolve_app
from worker.foundation.durations import parse_duration
from worker.storage import preferences
from worker.storage.models import UserPreference, utcnow

APP_HELP = "the Stream app's API key (required when several apps are configured)"


@click.group()
def users() -> None:
    """Switch a user's call pushes off (for good or for a while) and on again (per Stream
    app)."""


def _describe(user_id: str, preference: UserPreference | None) -> str:
    if not preferences.is_muted(preference, utcnow()):
        return f"{user_id}: call pushes on"
    assert preference is not None
    if preference.muted_until is None:
        return f"{user_id}: call pushes off (until unmuted)"
    until = preference.muted_until.isoformat().replace("+00:00", "Z")
    return f"{user_id}: call pushes off until {until}"


@users.command("mute")
@click.option("--user", "user_id", required=True)
@click.option("--until", "until_text", default=None, help="RFC 3339, e.g. 2026-12-01T00:00:00Z")
@click.option("--for", "for_text", default=None, help="a duration, e.g. 8h, 30m, 2d")
@app_option(APP_HELP)
@click.pass_context
def mute(
    ctx: click.Context,
    user_id: str,
    until_text: str | None,
    for_text: str | None,
    app: str | None,
) -> None:
    """Switch USER's call pushes off: for good, or until a time (--until) or for a while (--for)."""
    if until_text is not None and for_text is not None:
        raise click.UsageError("give --until or --for, not both")
    until: datetime | None = None
    if until_text is not None:
        try:
            until = preferences.parse_rfc3339(until_text)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--until") from None
        if until <= utcnow():
            raise click.BadParameter("must be in the future", param_hint="--until")
    elif for_text is not None:
        try:
            until = utcnow() + parse_duration(for_text)
        except (ValueError, OverflowError) as error:
            raise click.BadParameter(str(error), param_hint="--for") from None
    api_key = resolve_app(ctx, app)
    db = open_database(ctx)
    try:
        with db.transaction() as session:
            preference = preferences.set_preference(session, api_key, user_id, True, until)
            click.echo(_describe(user_id, preference))
    finally:
        db.dispose()


@users.command("unmute")
@click.option("--user", "user_id", required=True)
@app_option(APP_HELP)
@click.pass_context
def unmute(ctx: click.Context, user_id: str, app: str | None) -> None:
    """Switch USER's call pushes on again."""
    api_key = resolve_app(ctx, app)
    db = open_database(ctx)
    try:
        with db.transaction() as session:
            preference = preferences.set_preference(session, api_key, user_id, False, None)
            click.echo(_describe(user_id, preference))
    finally:
        db.dispose()


@users.command("show")
@click.option("--user", "user_id", required=True)
@app_option(APP_HELP)
@click.pass_context
def show(ctx: click.Context, user_id: str, app: str | None) -> None:
    """Whether USER's call pushes are on or off."""
    api_key = resolve_app(ctx, app)
    db = open_existing_database(ctx)
    try:
        with db.transaction() as session:
            preference = preferences.get_preference(session, api_key, user_id)
            click.echo(_describe(user_id, preference))
    finally:
        db.dispose()

"""`callpush users`: users' call-push preferences (mute, unmute, show)."""

from __future__ import annotations

from datetime import datetime

import click

from worker.commands import cli_settings
from worker.durations import parse_duration
from worker.storage import preferences
from worker.storage.database import Database
from worker.storage.models import UserPreference, utcnow


@click.group()
def users() -> None:
    """Switch a user's call pushes off (for good or for a while) and on again."""


def _db(ctx: click.Context) -> Database:
    from worker.storage.migrations import upgrade_to_head

    settings = cli_settings(ctx)
    if settings.embedded:  # the embedded SQLite file may not exist yet
        upgrade_to_head(settings.database_url)
    return Database(settings.database_url, timeouts=settings.database)


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
@click.pass_context
def mute(ctx: click.Context, user_id: str, until_text: str | None, for_text: str | None) -> None:
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
    db = _db(ctx)
    try:
        with db.transaction() as session:
            preference = preferences.set_preference(session, user_id, True, until)
            click.echo(_describe(user_id, preference))
    finally:
        db.dispose()


@users.command("unmute")
@click.option("--user", "user_id", required=True)
@click.pass_context
def unmute(ctx: click.Context, user_id: str) -> None:
    """Switch USER's call pushes on again."""
    db = _db(ctx)
    try:
        with db.transaction() as session:
            preference = preferences.set_preference(session, user_id, False, None)
            click.echo(_describe(user_id, preference))
    finally:
        db.dispose()


@users.command("show")
@click.option("--user", "user_id", required=True)
@click.pass_context
def show(ctx: click.Context, user_id: str) -> None:
    """Whether USER's call pushes are on or off."""
    db = _db(ctx)
    try:
        with db.transaction() as session:
            click.echo(_describe(user_id, preferences.get_preference(session, user_id)))
    finally:
        db.dispose()

"""`callpush devices`: the local device registry."""

from __future__ import annotations

import click

from worker.commands import cli_settings
from worker.push.base import Platform, redact_token
from worker.storage import devices as registry
from worker.storage.database import Database


@click.group()
def devices() -> None:
    """Register, list and remove push tokens."""


def _db(ctx: click.Context) -> Database:
    from worker.storage.migrations import upgrade_to_head

    settings = cli_settings(ctx)
    if settings.embedded:  # the embedded SQLite file may not exist yet
        upgrade_to_head(settings.database_url)
    return Database(settings.database_url, timeouts=settings.database)


@devices.command("add")
@click.option("--user", "user_id", required=True)
@click.option("--platform", type=click.Choice([p.value for p in Platform]), required=True)
@click.option("--token", required=True)
@click.option("--voip", is_flag=True, help="an APNs PushKit (VoIP) token")
@click.option("--app-id", default=None, help="iOS bundle id (default: apns.bundle_id)")
@click.pass_context
def add(
    ctx: click.Context, user_id: str, platform: str, token: str, voip: bool, app_id: str | None
) -> None:
    if voip and platform != Platform.APNS.value:
        raise click.BadParameter("--voip is for APNs tokens only", param_hint="--voip")
    db = _db(ctx)
    with db.transaction() as session:
        device = registry.add_device(
            session,
            user_id=user_id,
            platform=Platform(platform),
            token=token,
            voip=voip,
            app_id=app_id,
        )
        kind = f"{platform} voip" if voip else platform
        click.echo(f"device {device.id}: {user_id} {kind} {redact_token(token)}")
    db.dispose()


@devices.command("list")
@click.option("--user", "user_id", default=None)
@click.pass_context
def list_(ctx: click.Context, user_id: str | None) -> None:
    db = _db(ctx)
    with db.transaction() as session:
        found = registry.list_devices(session, user_id)
        click.echo(f"{'ID':>5}  {'USER':<20} {'PLATFORM':<8} {'VOIP':<4} {'TOKEN':<14} STATE")
        for d in found:
            state = (
                f"disabled {d.disabled_at:%Y-%m-%d %H:%M} ({d.disabled_reason})"
                if d.disabled_at
                else "active"
            )
            click.echo(
                f"{d.id:>5}  {d.user_id:<20} {d.platform:<8} {'yes' if d.voip else 'no':<4} "
                f"{redact_token(d.token):<14} {state}"
            )
    db.dispose()


@devices.command("remove")
@click.option("--token", required=True)
@click.option("--user", "user_id", default=None, help="only if it belongs to this user")
@click.pass_context
def remove(ctx: click.Context, token: str, user_id: str | None) -> None:
    db = _db(ctx)
    with db.transaction() as session:
        removed = registry.remove_device(session, token, user_id)
    db.dispose()
    if not removed:
        raise click.ClickException("no such device")
    click.echo(f"removed {removed} device(s)")

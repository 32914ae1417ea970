"""`callpush devices`: the local device registry."""

from __future__ import annotations

import click

from worker.apns_topics import bundle_id_problem
from worker.commands import cli_settings
from worker.push.base import Platform, redact_token
from worker.settings import Settings
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
@click.option(
    "--app-id", default=None, help="iOS bundle id, without .voip (default: its provider's)"
)
@click.option(
    "--push-provider-name",
    default=None,
    help="one of the app's push providers ([apps.apns_providers.<name>] / "
    "[apps.fcm_providers.<name>]); default: the app's default provider",
)
@click.pass_context
def add(
    ctx: click.Context,
    user_id: str,
    platform: str,
    token: str,
    voip: bool,
    app_id: str | None,
    push_provider_name: str | None,
) -> None:
    if voip and platform != Platform.APNS.value:
        raise click.BadParameter("--voip is for APNs tokens only", param_hint="--voip")
    if app_id is not None and platform == Platform.APNS.value:
        problem = bundle_id_problem(app_id)
        if problem:
            raise click.BadParameter(f"{app_id!r} {problem}", param_hint="--app-id")
    if push_provider_name is not None:
        _check_provider_name(cli_settings(ctx), Platform(platform), push_provider_name)
    db = _db(ctx)
    with db.transaction() as session:
        device = registry.add_device(
            session,
            user_id=user_id,
            platform=Platform(platform),
            token=token,
            voip=voip,
            app_id=app_id,
            push_provider_name=push_provider_name,
        )
        kind = f"{platform} voip" if voip else platform
        click.echo(f"device {device.id}: {user_id} {kind} {redact_token(token)}")
    db.dispose()


def _check_provider_name(settings: Settings, platform: Platform, name: str) -> None:
    """The CLI acts for no app in particular: the name must be one some app configures."""
    configured = {
        provider
        for app in settings.apps
        for provider in (app.apns_providers if platform is Platform.APNS else app.fcm_providers)
    }
    if name not in configured:
        raise click.BadParameter(
            f"push provider {name!r} is not configured for any app "
            f"({platform.value} providers: {', '.join(sorted(configured)) or 'none'})",
            param_hint="--push-provider-name",
        )


@devices.command("list")
@click.option("--user", "user_id", default=None)
@click.pass_context
def list_(ctx: click.Context, user_id: str | None) -> None:
    db = _db(ctx)
    with db.transaction() as session:
        found = registry.list_devices(session, user_id)
        click.echo(
            f"{'ID':>5}  {'USER':<20} {'PLATFORM':<8} {'VOIP':<4} {'TOKEN':<14} "
            f"{'PROVIDER':<20} STATE"
        )
        for d in found:
            state = (
                f"disabled {d.disabled_at:%Y-%m-%d %H:%M} ({d.disabled_reason})"
                if d.disabled_at
                else "active"
            )
            provider = d.push_provider_name or "(default)"
            click.echo(
                f"{d.id:>5}  {d.user_id:<20} {d.platform:<8} {'yes' if d.voip else 'no':<4} "
                f"{redact_token(d.token):<14} {provider:<20} {state}"
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

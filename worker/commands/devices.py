"""`callpush devices`: the local device registry, per Stream app."""

from __future__ import annotations

import click

from worker.commands import (
    app_option,
    cli_settings,
    open_database,
    open_existing_database,
    resolve_app,
)
from worker.commands.tables import echo_table
from worker.delivery.push_tokens import token_problem
from worker.foundation.apns_topics import bundle_id_problem
from worker.foundation.logging_setup import redact_token
from worker.foundation.settings import Settings
from worker.push.base import Platform
from worker.storage import devices as registry
from worker.storage.models import Device

APP_HELP = "the Stream app's API key (required when several apps are configured)"


@click.group()
def devices() -> None:
    """Register, list and remove push tokens (each Stream app has its own)."""


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
@app_option(APP_HELP)
@click.pass_context
def add(
    ctx: click.Context,
    user_id: str,
    platform: str,
    token: str,
    voip: bool,
    app_id: str | None,
    push_provider_name: str | None,
    app: str | None,
) -> None:
    """Register TOKEN for USER: a token another user of the app had moves to USER (recorded on
    the old registration), and beyond devices.max_per_user the oldest is evicted."""
    if voip and platform != Platform.APNS.value:
        raise click.BadParameter("--voip is for APNs tokens only", param_hint="--voip")
    if app_id is not None and platform == Platform.APNS.value:
        problem = bundle_id_problem(app_id)
        if problem:
            raise click.BadParameter(f"{app_id!r} {problem}", param_hint="--app-id")
    problem = token_problem(Platform(platform), token)
    if problem is not None:
        raise click.BadParameter(problem, param_hint="--token")
    api_key = resolve_app(ctx, app)
    if push_provider_name is not None:
        _check_provider_name(cli_settings(ctx), api_key, Platform(platform), push_provider_name)
    db = open_database(ctx)
    try:
        with db.transaction() as session:
            device = registry.add_device(
                session,
                api_key=api_key,
                user_id=user_id,
                platform=Platform(platform),
                token=token,
                voip=voip,
                app_id=app_id,
                push_provider_name=push_provider_name,
                max_per_user=cli_settings(ctx).devices.max_per_user,
            )
            kind = f"{platform} voip" if voip else platform
            click.echo(f"device {device.id}: {user_id} {kind} {redact_token(token)}")
    finally:
        db.dispose()


def describe_state(device: Device) -> str:
    """``active``, or when and why it was disabled (and to whom a moved token went)."""
    if device.disabled_at is None:
        return "active"
    moved = f"; now {device.moved_to_user_id}'s" if device.moved_to_user_id else ""
    return f"disabled {device.disabled_at:%Y-%m-%d %H:%M} ({device.disabled_reason}{moved})"


def _check_provider_name(settings: Settings, api_key: str, platform: Platform, name: str) -> None:
    """The name must be one of the app's providers of that platform, as Stream refuses a
    device whose provider is not configured."""
    app = settings.app_for_key(api_key)
    named = (app.apns_providers if platform is Platform.APNS else app.fcm_providers) if app else {}
    if name not in named:
        raise click.BadParameter(
            f"push provider {name!r} is not configured for app {api_key} "
            f"({platform.value} providers: {', '.join(sorted(named)) or 'none'})",
            param_hint="--push-provider-name",
        )


@devices.command("list")
@click.option("--user", "user_id", default=None)
@app_option(APP_HELP)
@click.pass_context
def list_(ctx: click.Context, user_id: str | None, app: str | None) -> None:
    """The app's devices (one user's with --user), disabled ones with the reason: a provider
    rejected the token, it moved to another user, or it was evicted."""
    api_key = resolve_app(ctx, app)
    db = open_existing_database(ctx)
    try:
        with db.transaction() as session:
            found = registry.list_devices(session, api_key, user_id)
            click.echo(f"app {api_key}")
            echo_table(
                ["ID", "USER", "PLATFORM", "VOIP", "TOKEN", "PROVIDER", "STATE"],
                [
                    [
                        str(d.id),
                        d.user_id,
                        d.platform,
                        "yes" if d.voip else "no",
                        redact_token(d.token),
                        d.push_provider_name or "(default)",
                        describe_state(d),
                    ]
                    for d in found
                ],
                right=frozenset({0}),
            )
    finally:
        db.dispose()


@devices.command("remove")
@click.option("--token", required=True)
@click.option("--user", "user_id", default=None, help="only if it belongs to this user")
@app_option(APP_HELP)
@click.pass_context
def remove(ctx: click.Context, token: str, user_id: str | None, app: str | None) -> None:
    api_key = resolve_app(ctx, app)
    db = open_existing_database(ctx)
    try:
        with db.transaction() as session:
            removed = registry.remove_device(session, api_key, token, user_id)
    finally:
        db.dispose()
    if not removed:
        raise click.ClickException("no such device")
    click.echo(f"removed {removed} device(s)")

"""`callpush db`: the database schema (Alembic migrations in worker/storage/alembic_scripts)."""

from __future__ import annotations

import click
from sqlalchemy.engine import make_url

from worker.commands import check_app, cli_settings, require_sqlite_file, served_apps
from worker.commands.errors import describe_error
from worker.storage.migrations import (
    UpgradeRefused,
    current_revision,
    head_revision,
    upgrade_to_head,
)


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


@click.group()
def db() -> None:
    """Database schema: migrate, show the revision."""


@db.command()
@click.option(
    "--owner-app",
    default=None,
    metavar="API_KEY",
    help="the Stream app that owns devices and preferences stored before they were kept per "
    "app (default: the only configured app; required with several)",
)
@click.pass_context
def upgrade(ctx: click.Context, owner_app: str | None) -> None:
    """Create the tables or migrate them to the newest revision (safe to run on every deploy)."""
    settings = cli_settings(ctx)
    url = settings.database_url
    owner = check_app(ctx, owner_app, "--owner-app") or served_apps(settings).single_app_key()
    try:
        upgrade_to_head(url, owner)
        revision = current_revision(url)
    except UpgradeRefused as refused:
        raise click.ClickException(
            f"database_url {_shown(url)}: upgrade failed: {refused}"
        ) from refused
    except Exception as error:
        # The driver's words on one line ("unable to open database file"), password hidden.
        raise click.ClickException(f"upgrade failed: {describe_error(error, settings)}") from error
    click.echo(f"{_shown(url)}: at revision {revision} (head)")


@db.command()
@click.pass_context
def current(ctx: click.Context) -> None:
    """Print the database's revision; exit 1 when it is behind the newest one."""
    url = cli_settings(ctx).database_url
    require_sqlite_file(url)
    try:
        revision = current_revision(url)
    except Exception as error:
        raise click.ClickException(f"database_url {_shown(url)}: {error}") from error
    head = head_revision()
    if revision == head:
        click.echo(f"{revision} (head)")
        return
    click.echo(f"{revision or 'none (empty database)'}; head is {head}: run `callpush db upgrade`")
    ctx.exit(1)

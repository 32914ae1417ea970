"""`callpush db`: the database schema (Alembic migrations in worker/migrations)."""

from __future__ import annotations

import click
from sqlalchemy.engine import make_url

from worker.commands import cli_settings
from worker.storage.migrations import current_revision, head_revision, upgrade_to_head


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


@click.group()
def db() -> None:
    """Database schema: migrate, show the revision."""


@db.command()
@click.pass_context
def upgrade(ctx: click.Context) -> None:
    """Create the tables or migrate them to the newest revision (safe to run on every deploy)."""
    url = cli_settings(ctx).database_url
    try:
        upgrade_to_head(url)
        revision = current_revision(url)
    except Exception as error:
        raise click.ClickException(
            f"database_url {_shown(url)}: upgrade failed: {error}"
        ) from error
    click.echo(f"{_shown(url)}: at revision {revision} (head)")


@db.command()
@click.pass_context
def current(ctx: click.Context) -> None:
    """Print the database's revision; exit 1 when it is behind the newest one."""
    url = cli_settings(ctx).database_url
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

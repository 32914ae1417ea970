"""`callpush` sub-commands, one module per group.  Each reads the settings through
:func:`cli_settings`, so the configuration is loaded once per invocation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from worker.foundation.settings import Settings, load_settings

if TYPE_CHECKING:
    from worker.storage.database import Database


def cli_settings(ctx: click.Context) -> Settings:
    root = ctx.find_root()
    root.ensure_object(dict)
    if "settings" not in root.obj:
        try:
            root.obj["settings"] = load_settings()
        except Exception as error:
            from worker.ops.config_show import format_settings_error

            # Names the setting and the problem, never the value (it may be a secret).
            message = format_settings_error(error)
            raise click.ClickException(f"configuration error:\n{message}") from error
    settings: Settings = root.obj["settings"]
    return settings


def served_apps(settings: Settings) -> Settings:
    """The settings with the Stream apps this deployment serves: in the embedded mode with no
    app configured, the development app `callpush run` accepts."""
    return settings.with_dev_app() if settings.embedded else settings


def open_database(ctx: click.Context) -> Database:
    """The configured database; the embedded SQLite file is created or migrated first (its
    pre-existing devices go to the only served app, as `callpush run` does)."""
    from worker.storage.database import Database
    from worker.storage.migrations import UpgradeRefused, upgrade_to_head

    settings = cli_settings(ctx)
    if settings.embedded:
        try:
            upgrade_to_head(settings.database_url, served_apps(settings).single_app_key())
        except UpgradeRefused as refused:
            raise click.ClickException(str(refused)) from refused
    return Database(settings.database_url, timeouts=settings.database)


def shown_database_url(url: str) -> str:
    """The database URL with its password masked, and a SQLite file's absolute path."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from worker.ops.config_show import redact_url

    path = sqlite_file(url)
    if path is not None:
        return f"{url} ({path.resolve()})"
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return redact_url(url)


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names; None for another database or an in-memory one."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    if parsed.query.get("uri") or parsed.database.startswith("file:"):
        return None  # a SQLite URI filename: its options decide; leave it to SQLite
    return Path(parsed.database)


def open_existing_database(ctx: click.Context) -> Database:
    """The configured database for a command that reads (or changes) what is stored: says on
    stderr which database it is, and refuses a SQLite file that does not exist, which
    connecting would create empty in the current directory (the default database_url is the
    relative ``sqlite:///callpush.db``)."""
    url = cli_settings(ctx).database_url
    click.echo(f"database: {shown_database_url(url)}", err=True)
    require_sqlite_file(url)
    return open_database(ctx)


def require_sqlite_file(url: str) -> None:
    path = sqlite_file(url)
    if path is not None and not path.exists():
        raise click.ClickException(
            f"database_url {url}: there is no database file {path.resolve()}; create it with "
            "`callpush db upgrade` (or `callpush run`), or set CALLPUSH_DATABASE_URL to the "
            "database to read"
        )


def app_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option("--app", "app", default=None, metavar="API_KEY", help=help_text)


def _app_keys(ctx: click.Context) -> list[str]:
    return [app.api_key for app in served_apps(cli_settings(ctx)).apps]


def resolve_app(ctx: click.Context, app: str | None) -> str:
    """The Stream app a command acts in: ``--app``, which must be a served app, or the only
    one.  With several apps ``--app`` is required (devices and users are kept per app)."""
    keys = _app_keys(ctx)
    if app is not None:
        checked = check_app(ctx, app)
        assert checked is not None
        return checked
    if len(keys) == 1:
        return keys[0]
    if not keys:
        raise click.UsageError(
            "no Stream app is configured (CALLPUSH_STREAM_API_KEY and "
            "CALLPUSH_STREAM_API_SECRET, or [[apps]])"
        )
    raise click.UsageError(
        f"several Stream apps are configured ({', '.join(keys)}): pass --app <api key>"
    )


def check_app(ctx: click.Context, app: str | None, option: str = "--app") -> str | None:
    """An optional ``--app`` filter: None, or the API key of a served app."""
    if app is None:
        return None
    keys = _app_keys(ctx)
    if app not in keys:
        served = ", ".join(keys) or "none is configured"
        raise click.BadParameter(
            f"{app!r} is not the API key of a configured Stream app ({served})",
            param_hint=option,
        )
    return app

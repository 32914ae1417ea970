"""`callpush` sub-commands, one module per group.  Each reads the settings through
:func:`cli_settings`, so the configuration is loaded once per invocation."""

from __future__ import annotations

import click

from worker.settings import Settings, load_settings


def cli_settings(ctx: click.Context) -> Settings:
    root = ctx.find_root()
    root.ensure_object(dict)
    if "settings" not in root.obj:
        try:
            root.obj["settings"] = load_settings()
        except Exception as error:
            from worker.config_check import format_settings_error

            # Names the setting and the problem, never the value (it may be a secret).
            message = format_settings_error(error)
            raise click.ClickException(f"configuration error:\n{message}") from error
    settings: Settings = root.obj["settings"]
    return settings

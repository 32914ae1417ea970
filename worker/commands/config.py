"""`callpush config`: show the effective configuration (worker.ops.config_show) and check what it
points at (worker.ops.config_check)."""

from __future__ import annotations

import json

import click

from worker.foundation.settings import Settings, load_settings
from worker.ops import config_check, config_show

_COLOURS = {"OK": "green", "WARN": "yellow", "FAIL": "red"}


@click.group()
def config() -> None:
    """The configuration: TOML file (CALLPUSH_CONFIG or ./callpush.toml) and CALLPUSH_* env."""


_format_option = click.option(
    "--format",
    "output_format",
    type=click.Choice(["toml", "json"]),
    default="toml",
    show_default=True,
    help="how to print the effective configuration",
)


@config.command()
@_format_option
@click.pass_context
def show(ctx: click.Context, output_format: str) -> None:
    """Print the effective configuration, secrets redacted (those read from files shown as
    <from file PATH>), and check nothing."""
    settings = _settings(ctx)
    if settings is None:
        ctx.exit(1)
    assert settings is not None
    _echo_settings(settings, output_format)


@config.command()
@_format_option
@click.pass_context
def check(ctx: click.Context, output_format: str) -> None:
    """Print the effective configuration (secrets redacted), then check the database, broker,
    credentials and URLs it names.  Exit code 1 when a check fails."""
    settings = _settings(ctx)
    if settings is None:
        ctx.exit(1)
    assert settings is not None
    _echo_settings(settings, output_format)

    checks = config_check.run_checks(settings)
    width = max(len(check.name) for check in checks)
    for item in checks:
        status = click.style(f"{item.status:<4}", fg=_COLOURS[item.status], bold=True)
        detail = config_show.scrub(item.detail, settings)
        click.echo(f"{status}  {item.name:<{width}}  {detail}")
    failures = config_check.failed(checks)
    if failures:
        click.echo(f"\n{len(failures)} of {len(checks)} checks failed", err=True)
        ctx.exit(1)
    click.echo(f"\nall {len(checks)} checks passed")


def _echo_settings(settings: Settings, output_format: str) -> None:
    data = config_show.redacted_settings(settings)
    if output_format == "json":
        shown = json.dumps(data, indent=2) + "\n"
    else:
        shown = "# effective configuration, secrets redacted\n" + config_show.render_toml(data)
    click.echo(config_show.scrub(shown, settings))


def _settings(ctx: click.Context) -> Settings | None:
    """Like :func:`worker.commands.cli_settings`, but a broken configuration becomes a FAIL line
    that never quotes input values (they may be secrets)."""
    root = ctx.find_root()
    root.ensure_object(dict)
    if "settings" in root.obj:
        settings: Settings = root.obj["settings"]
        return settings
    loaded, problem = config_check.load_settings_safely(load_settings)
    if problem is not None:
        status = click.style("FAIL", fg="red", bold=True)
        click.echo(f"{status}  {problem.name}  {problem.detail}", err=True)
        return None
    root.obj["settings"] = loaded
    return loaded

"""The `callpush` command line: the composition root that wires settings, storage, Celery and the
web app together."""

from __future__ import annotations

import click

from worker.commands import config as config_commands
from worker.commands import db as db_commands
from worker.commands import devices as device_commands
from worker.commands import events as event_commands
from worker.commands import serve, simulate, trace
from worker.commands import users as user_commands
from worker.commands.errors import ReportingGroup


@click.group(cls=ReportingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show the traceback of an unexpected error.")
# Read from the installed package's metadata when asked (worker/foundation/version.py's source).
@click.version_option(package_name="callpush", prog_name="callpush", message="%(prog)s %(version)s")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """callpush: Stream Video webhooks in, VoIP and FCM call pushes out."""
    ctx.ensure_object(dict)


for command in (
    serve.run,
    serve.web,
    serve.worker,
    serve.beat,
    device_commands.devices,
    user_commands.users,
    simulate.simulate,
    db_commands.db,
    config_commands.config,
    event_commands.events,
    trace.trace,
):
    main.add_command(command)

"""The one place where an error a command did not handle becomes a message and an exit status.

Bad arguments are click's own (a usage message, exit 2).  What the surroundings get wrong — a
database that is missing, unreachable or not migrated, a broker that does not answer, a file that
cannot be read — becomes one line naming what to fix, exit 1, never a traceback.  Anything else
is a bug: one line saying so, exit 1, and ``callpush --debug …`` shows the traceback.  Messages
go through the secret scrubber of `callpush config check`, as database URLs carry passwords.
"""

from __future__ import annotations

from typing import Any

import click

from worker.foundation.settings import Settings


class ReportingGroup(click.Group):
    """The root `callpush` group: runs the sub-command and reports its errors."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as error:
            if ctx.params.get("debug"):
                raise
            settings = (ctx.obj or {}).get("settings")
            raise click.ClickException(describe_error(error, settings)) from error


def describe_error(error: BaseException, settings: Settings | None) -> str:
    from worker.ops.config_show import scrub

    return scrub(" ".join(_describe(error, settings).split()), settings)


def _describe(error: BaseException, settings: Settings | None) -> str:
    from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

    database = _shown_url(settings.database_url) if settings else "the database"
    if isinstance(error, DBAPIError):
        detail = _first_line(error.orig) if error.orig is not None else type(error).__name__
        if _is_missing_table(detail):
            return (
                f"database_url {database}: the database has no callpush tables yet "
                f"({detail}): run `callpush db upgrade`"
            )
        # The driver's own words say what is wrong: "connection refused", "database "x" does
        # not exist", "unable to open database file", "password authentication failed".
        return f"database_url {database}: {detail}"
    if isinstance(error, ArgumentError | NoSuchModuleError):
        return f"database_url {database}: not a usable database URL ({_first_line(error)})"
    broker = _broker_problem(error, settings)
    if broker is not None:
        return broker
    if isinstance(error, OSError):
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror or _first_line(error)}"
    if isinstance(error, UnicodeError):
        return f"not UTF-8 text: {_first_line(error)}"
    return (
        f"unexpected error ({type(error).__name__}: {_first_line(error)}); this is a bug: "
        "run `callpush --debug …` to see the traceback, and please report it"
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:300]


def _shown_url(url: str) -> str:
    from worker.ops.config_show import redact_url

    return redact_url(url)


def _is_missing_table(detail: str) -> bool:
    lowered = detail.lower()
    return "no such table" in lowered or ("relation" in lowered and "does not exist" in lowered)


def _broker_problem(error: BaseException, settings: Settings | None) -> str | None:
    from amqp.exceptions import ConnectionError as AmqpConnectionError
    from kombu.exceptions import OperationalError as KombuOperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    # RabbitMQ's (py-amqp) counterpart of Redis's: a connection refused, closed or forced.
    broker_down = (
        KombuOperationalError | RedisConnectionError | RedisTimeoutError | AmqpConnectionError
    )
    if not isinstance(error, broker_down):
        return None
    broker = _shown_url(settings.broker_url) if settings and settings.broker_url else "the broker"
    return f"broker_url {broker}: cannot reach the broker: {_first_line(error)}"

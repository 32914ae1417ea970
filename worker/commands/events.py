"""`callpush events`: the event log (list, show), replay, import and purge.

Thin commands over worker.ops.event_log, worker.ops.replay_jobs, worker.intake.file_import and
worker.storage.retention.  With a broker (production) replays go to the bulk queue and imports are
queued like webhooks; in the embedded mode there is no worker to hand them to, so this process
handles them itself (worker.runtime.inline_handoff).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, BinaryIO

import click

from worker.commands import (
    app_option,
    check_app,
    cli_settings,
    open_database,
    open_existing_database,
    shown_database_url,
)
from worker.commands.progress import ProgressLine, progress_wanted
from worker.commands.tables import format_table
from worker.delivery.recipient_outcomes import Reach
from worker.foundation.durations import format_duration
from worker.foundation.handoff import Handoff
from worker.foundation.settings import Settings
from worker.foundation.text_escaping import escape_controls, escape_unsafe_in_json
from worker.intake.file_import import (
    count_lines,
    import_lines,
    max_line_bytes,
    read_lines,
)
from worker.intake.webhooks import IntakeRules
from worker.ops import event_log
from worker.ops.replay_jobs import (
    MAX_SELECTED,
    ReplayPlan,
    count_failed_events,
    describe_replay,
    failed_event_ids,
    final_statuses,
    replay_events,
)
from worker.runtime.celery_app import create_celery
from worker.runtime.inline_handoff import InlineHandoff
from worker.storage import retention
from worker.storage.database import Database
from worker.storage.models import utcnow

# `events list --user` without --since: the search by user reads the window's bodies.
USER_SEARCH_WINDOW = timedelta(hours=24)
# Replays of at least this many events get a progress bar.
PROGRESS_FROM = 5


class TimeArgument(click.ParamType):
    """``1h``, ``30m``, ``2d`` ago, or an ISO 8601 timestamp."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        try:
            return event_log.parse_time(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)


class DurationArgument(click.ParamType):
    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, timedelta):
            return value
        try:
            return event_log.parse_duration(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)


TIME = TimeArgument()
DURATION = DurationArgument()
EVENT_ID = click.IntRange(1, event_log.MAX_ID)


APP_FILTER_HELP = "only this Stream app's (its API key)"


@contextmanager
def database(ctx: click.Context, *, create: bool = False) -> Iterator[Database]:
    """The database, named on stderr; a missing SQLite file is an error unless ``create``."""
    if create:
        click.echo(f"database: {shown_database_url(cli_settings(ctx).database_url)}", err=True)
        db = open_database(ctx)
    else:
        db = open_existing_database(ctx)
    try:
        yield db
    finally:
        db.dispose()


@contextmanager
def _handoff(settings: Settings) -> Iterator[tuple[Handoff, bool]]:
    """Where replayed and imported events are processed, and whether that is here: the
    queues, or this process (beside the embedded mode, whose queue lives in its memory)."""
    if settings.embedded:
        with InlineHandoff(settings) as inline:
            yield inline, True
        return
    celery = create_celery(settings)
    try:
        yield celery.handoff, False
    finally:
        celery.close()


def _time(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value is not None else "-"


def echo_json(document: Any) -> None:
    text = json.dumps(event_log.as_json(document), indent=2, ensure_ascii=False)
    click.echo(escape_unsafe_in_json(text))


def echo_line(text: str) -> None:
    """One line built from stored data (a webhook's fields): a newline, a terminal escape or a
    character the terminal cannot encode is written as an escape
    (worker.foundation.text_escaping)."""
    click.echo(escape_controls(text))


@click.group()
def events() -> None:
    """The event log: what Stream sent, what was pushed; replay, import, purge."""


@events.command("list")
@click.option(
    "--status", type=click.Choice(event_log.EVENT_STATUSES), default=None, help="event status"
)
@click.option("--type", "event_type", default=None, metavar="TYPE", help="e.g. call.ring")
@click.option("--call", "call_cid", default=None, metavar="CID", help="e.g. default:123")
@click.option(
    "--user",
    "user_id",
    default=None,
    metavar="USER_ID",
    help="only events that concerned this user (caller or recipient; --since defaults to 24h)",
)
@click.option("--since", type=TIME, default=None, help="1h, 30m, 2d or an ISO 8601 time")
@click.option("--until", type=TIME, default=None, help="1h, 30m, 2d or an ISO 8601 time")
@click.option("--limit", type=click.IntRange(1, event_log.MAX_LIMIT), default=50, show_default=True)
@app_option(APP_FILTER_HELP)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def list_(
    ctx: click.Context,
    status: str | None,
    event_type: str | None,
    call_cid: str | None,
    user_id: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    app: str | None,
    as_json: bool,
) -> None:
    """The newest events first (times in UTC)."""
    api_key = check_app(ctx, app)
    if user_id is not None and since is None:
        # The search by user reads the window's stored bodies: always a bounded window.
        since = utcnow() - USER_SEARCH_WINDOW
    with database(ctx) as db, db.transaction() as session:
        found = event_log.list_events(
            session,
            status,
            event_type,
            call_cid,
            since=since,
            until=until,
            limit=limit,
            api_key=api_key,
            user_id=user_id,
        )
    if as_json:
        echo_json({"events": found})
        return
    if not found:
        click.echo("(no events)")
    else:
        header, *lines = format_table(
            ["ID", "RECEIVED (UTC)", "TYPE", "STATUS", "CALL", "PUSHES"],
            [
                [
                    str(e.id),
                    _time(e.received_at),
                    e.event_type,
                    e.status,
                    e.call_cid or "-",
                    (f"{e.reach.summary}: " if e.reach else "")
                    + event_log.format_pushes(e.pushes)
                    + (f"  (replayed {e.replays}x)" if e.replays else ""),
                ]
                for e in found
            ],
            right=frozenset({0}),
        )
        click.echo(header)
        for e, line in zip(found, lines, strict=True):
            # A push event that reached nobody is a problem even when it was "processed".
            click.echo(click.style(line, fg=_nobody_style(e.reach)))
    if found and api_key is None and len({e.api_key for e in found}) > 1:
        click.echo("(several Stream apps: narrow with --app)")


@events.command("show")
@click.argument("event_id", type=EVENT_ID)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def show(ctx: click.Context, event_id: int, as_json: bool) -> None:
    """One event: its recipients and each device's push with outcome, reason and timing."""
    with database(ctx) as db, db.transaction() as session:
        detail = event_log.event_detail(session, event_id)
    if detail is None:
        raise click.ClickException(f"no event {event_id}")
    if as_json:
        echo_json(detail)
        return
    reason = f": {detail.status_reason}" if detail.status_reason else ""
    head = f"event {detail.id}  {detail.event_type}  {detail.status}{reason}"
    click.echo(click.style(escape_controls(head), fg=_nobody_style(detail.reach)))
    rows = [
        ("app", detail.api_key),
        ("call", f"{detail.call_cid or '-'}  (session {detail.session_id or '-'})"),
        ("created", f"{_time(detail.event_created_at)} (by Stream)"),
        ("received", f"{_time(detail.received_at)}  (webhook {detail.webhook_id})"),
        ("processed", f"{_time(detail.processed_at)}  ({detail.processing_attempts} run(s))"),
        ("replays", f"{detail.replays}{' (last with --force)' if detail.replay_force else ''}"),
        ("recipients", _recipients_text(detail.recipients)),
        ("reach", detail.reach.summary if detail.reach else "-"),
        ("pushes", event_log.format_pushes(detail.pushes)),
    ]
    for label, value in rows:
        echo_line(f"  {label:<11} {value}")
    if not detail.deliveries:
        click.echo("\nno pushes recorded for this event")
        return
    click.echo()
    lines = format_table(
        ["USER", "DEVICE", "STATUS", "TRIES", "LATENCY", "ANSWERED (UTC)", "REASON"],
        [
            [
                d.user_id,
                # A recipient who got no push has a row without a device.
                " ".join(part for part in (d.platform, d.kind, d.token_hint) if part) or "-",
                d.status,
                str(d.attempts),
                event_log.format_latency(d.latency_ms),
                _time(d.finished_at),
                (d.reason or "")
                + (f" [{d.status_code}]" if d.status_code else "")
                + (
                    f"; {event_log.format_phone_receipt(d.phone_latency_ms)}"
                    if d.phone_received_at is not None
                    else ""
                ),
            ]
            for d in detail.deliveries
        ],
        right=frozenset({3, 4}),
    )
    for line in lines:
        click.echo(f"  {line}")


def _nobody_style(reach: Reach | None) -> str | None:
    return "yellow" if reach is not None and not reach.reached else None


def _recipients_text(recipients: tuple[str, ...] | None) -> str:
    if recipients is None:
        return "-"
    if not recipients:
        return "none"
    shown = ", ".join(recipients[:20])
    return shown + (f" and {len(recipients) - 20} more" if len(recipients) > 20 else "")


@events.command("replay")
@click.argument("event_ids", nargs=-1, type=EVENT_ID)
@click.option("--failed", is_flag=True, help="every failed event received in --since/--until")
@click.option("--since", type=TIME, default=None, help="with --failed: 1h, 2d or ISO 8601")
@click.option("--until", type=TIME, default=None, help="with --failed: 1h, 2d or ISO 8601")
@click.option("--type", "event_type", default=None, metavar="TYPE", help="with --failed")
@app_option("with --failed: only this Stream app's (its API key)")
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_SELECTED),
    default=MAX_SELECTED,
    show_default=True,
    help="with --failed: at most this many events, the oldest first",
)
@click.option("--dry-run", is_flag=True, help="print what would be re-sent; change nothing")
@click.option(
    "--force",
    is_flag=True,
    help="re-send even pushes that were sent, and re-ring rings that are over",
)
@click.option(
    "--allow-stale",
    is_flag=True,
    help="push even events that arrived older than intake.max_event_age_seconds",
)
@click.pass_context
def replay(
    ctx: click.Context,
    event_ids: Sequence[int],
    failed: bool,
    since: datetime | None,
    until: datetime | None,
    event_type: str | None,
    app: str | None,
    limit: int,
    dry_run: bool,
    force: bool,
    allow_stale: bool,
) -> None:
    """Put events through the normal processing path again.

    Devices that already got the push are skipped and rings that are over are not re-rung,
    unless --force.  An event that arrived stale (Stream created it longer than
    intake.max_event_age_seconds before it arrived) was never pushed and is not pushed now,
    unless --allow-stale.  With a broker the events go to the bulk queue (a replay never
    delays a live ring); in the embedded mode (no broker_url) there is no separate worker, so
    this command processes them itself and returns when they are done.

    \b
      callpush events replay 812 813 --dry-run
      callpush events replay --failed --since 2024-05-01T22:00:00Z --until 2024-05-02T06:00:00Z
    """
    if failed == bool(event_ids):
        raise click.UsageError("give event ids, or --failed --since … (not both)")
    if failed and since is None:
        raise click.UsageError("--failed needs --since (e.g. --since 12h)")
    if not failed and (since or until or event_type or app or limit != MAX_SELECTED):
        raise click.UsageError(
            "--since/--until/--type/--app/--limit select events for --failed only"
        )
    api_key = check_app(ctx, app)
    settings = cli_settings(ctx)
    with database(ctx) as db:
        if failed:
            assert since is not None
            with db.transaction() as session:
                event_ids = failed_event_ids(
                    session, since, until, event_type, api_key, limit=limit
                )
                left = 0
                if len(event_ids) >= limit:
                    left = count_failed_events(session, since, until, event_type, api_key)
                    left -= len(event_ids)
            if not event_ids:
                click.echo("no failed events in that window")
                return
            if left > 0:
                click.echo(
                    f"stopping at the limit of {limit:,} events (the oldest, up to event "
                    f"{event_ids[-1]}): {left:,} more failed event(s) in the window are left "
                    "out; replay them with a later --since, or another run once these are done",
                    err=True,
                )
        with db.transaction() as session:
            plan = describe_replay(
                session,
                event_ids,
                force,
                settings.ring.default_timeout_ms,
                max_event_age=timedelta(seconds=settings.intake.max_event_age_seconds),
                allow_stale=allow_stale,
            )
        _print_plan(plan, dry_run)
        if dry_run or not plan.events:
            if plan.unknown:
                ctx.exit(1)
            return
        ids = [p.replay.event_id for p in plan.events]
        with _handoff(settings) as (handoff, inline):
            where = "processing here (embedded mode)" if inline else "bulk queue"
            if len(ids) >= PROGRESS_FROM:
                with click.progressbar(length=len(ids), label=f"replaying ({where})") as bar:
                    outcome = replay_events(
                        db,
                        ids,
                        force,
                        handoff,
                        progress=lambda _id: bar.update(1),
                        allow_stale=allow_stale,
                    )
            else:
                outcome = replay_events(db, ids, force, handoff, allow_stale=allow_stale)
        summary = f"replayed {len(outcome.reopened)} event(s), {plan.devices} device(s) to re-send"
        if inline:
            with db.transaction() as session:
                statuses = final_statuses(session, outcome.reopened)
            done = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
            click.echo(f"{summary}; processed here: {done or 'nothing'}")
        else:
            click.echo(f"{summary}; queued on the bulk queue")
        if outcome.not_queued:
            click.echo(
                f"{len(outcome.not_queued)} event(s) reopened but not queued (broker down?): "
                f"{_ids(outcome.not_queued)}; the inbox sweeper queues them later",
                err=True,
            )
    if plan.unknown or outcome.not_queued:
        ctx.exit(1)


def _print_plan(plan: ReplayPlan, dry_run: bool) -> None:
    verb = "would re-send" if dry_run else "re-sending"
    for planned in plan.events:
        r = planned.replay
        head = f"event {r.event_id}  {r.event_type}  {r.call_cid or '-'}  ({r.status})"
        if planned.stale is not None:
            click.echo(f"{head}: not pushed: {planned.stale}")
            continue
        if planned.ring_over and r.resend:
            echo_line(
                f"{head}: the ring is over: {len(r.resend)} push(es) recorded as expired, "
                "not rung (--force re-rings)"
            )
        elif r.resend:
            echo_line(f"{head}: {verb} {len(r.resend)} push(es), {r.skipped} left alone")
        elif r.skipped:
            echo_line(f"{head}: nothing to re-send ({r.skipped} already settled)")
        else:
            echo_line(f"{head}: no pushes recorded; recipients are resolved again")
        for d in r.resend:
            echo_line(
                f"    {d.user_id:<16} {d.platform:<5} {d.token_hint:<14} was {d.previous_status}"
            )
    if plan.unknown:
        click.echo(f"unknown event id(s): {_ids(plan.unknown)}", err=True)
    total = f"{len(plan.events)} event(s), {plan.devices} device(s) to re-send"
    if dry_run:
        click.echo(f"dry run: {total}; nothing was changed")


def _ids(ids: Sequence[int]) -> str:
    shown = " ".join(str(i) for i in ids[:20])
    return shown + (f" … ({len(ids)} in all)" if len(ids) > 20 else "")


@events.command("import")
@click.argument("file", type=click.File("rb"))
@click.option(
    "--api-key",
    default=None,
    help="the Stream app the events belong to (default: the only configured app)",
)
@click.option(
    "--allow-stale",
    is_flag=True,
    help="push even events Stream created longer than intake.max_event_age_seconds ago",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="a progress line with an ETA on stderr (default: when stderr is a terminal)",
)
@click.pass_context
def import_(
    ctx: click.Context,
    file: BinaryIO,
    api_key: str | None,
    allow_stale: bool,
    progress: bool | None,
) -> None:
    """Re-ingest saved webhook bodies: JSON lines, one Stream event per line (or
    {"webhook_id": …, "body": …}; FILE may be - for stdin).  No signature is needed; events
    already in the inbox (same webhook id or same body) are skipped.  New events are queued
    like webhooks (processed here in the embedded mode).  Push events Stream created longer
    than intake.max_event_age_seconds ago are stored as ignored, not pushed, unless
    --allow-stale.  Lines that are not UTF-8 JSON, or longer than four times max_body_bytes,
    are reported by number and skipped, and the command then exits with status 1."""
    settings = cli_settings(ctx)
    if settings.embedded:
        settings = settings.with_dev_app()  # the key `callpush run` accepts
    if api_key is None:
        if len(settings.apps) != 1:
            raise click.UsageError("several Stream apps are configured: pass --api-key")
        api_key = settings.apps[0].api_key
    elif settings.app_for_key(api_key) is None:
        raise click.BadParameter(
            "not the API key of a configured Stream app", param_hint="--api-key"
        )
    shown = progress_wanted(progress)
    total = count_lines(file) if shown else None
    with database(ctx, create=True) as db, _handoff(settings) as (handoff, inline):
        lines = read_lines(file, max_line_bytes(settings.max_body_bytes))
        intake = settings.intake
        bars = _ImportProgress(shown, total, "processing here" if inline else "queuing")
        report = import_lines(
            db,
            lines,
            api_key,
            handoff,
            max_bytes=settings.max_body_bytes,
            rules=IntakeRules.from_settings(intake, allow_stale),
            dedupe_window=timedelta(seconds=intake.dedupe_window_seconds),
            progress=bars.stored if shown else None,
            dispatched=bars.dispatched if shown else None,
        )
        bars.finish()
    for number, reason in report.problems:
        click.echo(f"line {number}: {reason}", err=True)
    if report.invalid > len(report.problems):
        click.echo(f"… and {report.invalid - len(report.problems)} more invalid lines", err=True)
    where = "processed here" if inline else "queued"
    click.echo(
        f"imported {report.imported}, duplicates {report.duplicates}, invalid {report.invalid}; "
        f"{report.queued} {where}"
    )
    if report.stale:
        click.echo(
            f"{report.stale} imported event(s) are stale (created more than "
            f"{settings.intake.max_event_age_seconds:g} s ago): stored as ignored, not pushed; "
            "import with --allow-stale to push them",
            err=True,
        )
    if report.failed:
        click.echo(
            f"{report.failed} imported event(s) cannot be acted on: stored as failed "
            "(`callpush events list --status failed` says why)",
            err=True,
        )
    if report.not_queued:
        click.echo(
            f"{len(report.not_queued)} event(s) stored but not queued: {_ids(report.not_queued)}; "
            "the inbox sweeper queues them later",
            err=True,
        )
    if report.invalid:
        click.echo(f"{report.invalid} line(s) rejected (not imported)", err=True)
    if report.invalid or report.not_queued:
        ctx.exit(1)


class _ImportProgress:
    """The import's two progress lines on stderr: lines stored, then events dispatched."""

    def __init__(self, shown: bool, total_lines: int | None, dispatch_label: str) -> None:
        self.dispatch_label = dispatch_label
        self.lines = ProgressLine("importing", total_lines, "lines") if shown else None
        self.events: ProgressLine | None = None

    def stored(self, n: int) -> None:
        if self.lines is not None:
            self.lines.update(n)

    def dispatched(self, done: int, total: int) -> None:
        if self.events is None:
            self.finish()
            self.events = ProgressLine(self.dispatch_label, total, "events")
        self.events.update(done - self.events.done)

    def finish(self) -> None:
        for line in (self.lines, self.events):
            if line is not None and not line.finished:
                line.finish()


@events.command("purge")
@click.option("--older-than", "age", type=DURATION, required=True, help="e.g. 30d, 12w")
@click.option("--dry-run", is_flag=True, help="count what would be deleted")
@click.pass_context
def purge(ctx: click.Context, age: timedelta, dry_run: bool) -> None:
    """Delete events received longer ago than --older-than, with their pushes' records."""
    try:
        retention.cutoff_for(age)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--older-than") from None
    with database(ctx) as db:
        if dry_run:
            with db.transaction() as session:
                n = retention.count_older_than(session, age)
            click.echo(f"dry run: {n} event(s) older than {format_duration(age)} would be deleted")
            return
        counts = retention.purge_in_batches(db, age)
    click.echo(
        f"deleted {counts.events} event(s), {counts.deliveries} delivery record(s), "
        f"{counts.chunks} fan-out chunk(s) older than {format_duration(age)}"
    )

"""The long-running commands: run (embedded), web, worker, beat.

Each sets up logging (JSON lines by default for the production commands, text for `run`) and the
metrics mode before importing anything that records metrics: prometheus_client picks its
single- or multi-process mode once, when it is first imported.
"""

from __future__ import annotations

import atexit
import errno
import ipaddress
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from worker.commands import cli_settings
from worker.foundation.logging_setup import LogFormat
from worker.foundation.settings import DEV_API_KEY, DEV_API_SECRET, Settings

if TYPE_CHECKING:
    from celery import Celery

# prometheus_client's variable, read when prometheus_client is first imported.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _logging(settings: Settings, default_format: LogFormat) -> tuple[Callable[[], None], bool]:
    """Configure the root logger.  Returns the same configuration as a function (for Celery's
    ``setup_logging`` signal) and whether the lines are JSON."""
    from worker.foundation.logging_setup import configure_logging, resolve_log_format
    from worker.foundation.secret_sources import secret_values

    try:
        log_format = resolve_log_format(settings, default_format)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    secrets = secret_values(settings)

    def apply() -> None:
        configure_logging(settings.log_level, json=log_format == "json", secrets=secrets)

    apply()
    return apply, log_format == "json"


def _single_process_metrics() -> None:
    """`callpush run` is one process: the plain registry.  A PROMETHEUS_MULTIPROC_DIR inherited
    from the shell would switch it to files shared with whatever else uses that directory."""
    os.environ.pop(MULTIPROC_ENV, None)
    os.environ.pop(MULTIPROC_ENV.lower(), None)


def _multiprocess_metrics_dir(role: str) -> str:
    """Turn on prometheus_client's multiprocess mode for this process and its children (gunicorn
    workers, Celery pool processes), in PROMETHEUS_MULTIPROC_DIR or a new temporary directory.

    The directory is emptied first: files left by an earlier run would be added to this run's
    totals, and a reused pid would continue a dead process's counters.  So each `callpush web`
    and each `callpush worker` needs a directory of its own (the default temporary one is)."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError(
            "prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR was set: each "
            "process would count alone and /metrics would miss them"
        )
    configured = os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower())
    if configured:
        directory = Path(configured)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
    else:
        directory = Path(tempfile.mkdtemp(prefix=f"callpush-metrics-{role}-"))
        owner = os.getpid()

        def remove() -> None:
            # Forked children inherit atexit handlers: only the process that made it removes it.
            if os.getpid() == owner:
                shutil.rmtree(directory, ignore_errors=True)

        atexit.register(remove)
    os.environ[MULTIPROC_ENV] = str(directory)
    return str(directory)


# Ring tasks a `--queues ring` worker runs at once.  A ring whose pushes APNs/FCM keep refusing
# (429, 5xx) is retried until the ring is over, sleeping in its thread: 64 threads let about two
# such rings start per second (30 s rings) before a healthy ring waits for a thread.  A thread
# holds a database connection only inside its short transactions, never while it waits on a
# provider or sleeps, so 64 threads share the pool's 30 connections (README: scaling out).
RING_THREADS = 64


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
# Threads for rings and everything else (a ring being retried holds one until the ring is over).
@click.option("--concurrency", default=16, show_default=True, type=int, help="worker threads")
@click.pass_context
def run(ctx: click.Context, host: str, port: int, concurrency: int) -> None:
    """Receiver and worker in one process (SQLite, no Redis): for a laptop or a small app."""
    _single_process_metrics()
    from worker.commands.embedded import run_embedded

    settings = cli_settings(ctx)
    if settings.broker_url:
        raise click.ClickException(
            "broker_url is set: run `callpush web` and `callpush worker` for the production mode"
        )
    _refuse_weak_admin_token(settings)
    if _uses_dev_key(settings) and not _is_loopback(host):
        raise click.ClickException(
            f"--host {host}: `callpush run` accepts webhooks signed with the public "
            f"development key ({DEV_API_KEY}), which anyone can sign, so it listens on "
            "127.0.0.1 only.  Configure your Stream app (CALLPUSH_STREAM_API_KEY and "
            "CALLPUSH_STREAM_API_SECRET, or [[apps]]) to listen on another address."
        )
    _logging(settings, "text")
    from worker.storage.migrations import UpgradeRefused

    try:
        run_embedded(settings, host=host, port=port, concurrency=concurrency)
    except UpgradeRefused as refused:  # the SQLite file holds devices of an unknown app
        raise click.ClickException(str(refused)) from refused
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        # Another `callpush run` (or anything else) listens there: say where, not a traceback.
        raise click.ClickException(
            f"--host {host} --port {port}: the address is already in use (another "
            "`callpush run`?); stop it or pass another --port"
        ) from error


@click.command()
@click.option("--bind", default="0.0.0.0:8080", show_default=True)
@click.option("--workers", default=2, show_default=True, type=int)
@click.option("--threads", default=8, show_default=True, type=int)
@click.pass_context
def web(ctx: click.Context, bind: str, workers: int, threads: int) -> None:
    """The webhook receiver under gunicorn (production: needs broker_url)."""
    from gunicorn.app.base import BaseApplication

    settings = cli_settings(ctx)
    _require_production(settings)
    _refuse_weak_admin_token(settings)
    _logging(settings, "json")
    _multiprocess_metrics_dir("web")

    class Server(BaseApplication):
        def load_config(self) -> None:
            options: dict[str, Any] = {
                "bind": bind,
                "workers": workers,
                "threads": threads,
                "worker_class": "gthread",
                **_gunicorn_timeouts(settings),
                # No access log: DELETE /devices/<token> would write whole device tokens.
                "accesslog": None,
                "loglevel": settings.log_level.lower(),
                "logger_class": _gunicorn_logger_class(),
                "child_exit": _gunicorn_child_exit,
                "pre_request": _close_after_unread_bodies(settings.max_body_bytes),
            }
            if "control_socket_disable" in self.cfg.settings:
                # gunicorn 25.1+ opens a control socket for `gunicornc` (reload, resize, stop)
                # at one path per user ($XDG_RUNTIME_DIR/gunicorn.ctl or ~/.gunicorn/), so two
                # `callpush web` instances would share, and take over, each other's.  Nothing
                # here uses it: supervisors send signals.
                options["control_socket_disable"] = True
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            from webhook_app import create_app

            return create_app(settings)  # in each gunicorn worker, after the fork

    Server().run()


@click.command()
@click.option(
    "--queues", default="ring,bulk", show_default=True, help="comma-separated: ring, bulk"
)
@click.option(
    "--concurrency",
    "-c",
    default=None,
    type=int,
    help=f"tasks at once (default: {RING_THREADS} threads for --queues ring, else one process "
    "per core)",
)
@click.option(
    "--pool", default=None, help="prefork or threads (default: threads for --queues ring only)"
)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="serve Prometheus /metrics of this worker's processes on this port",
)
@click.pass_context
def worker(
    ctx: click.Context,
    queues: str,
    concurrency: int | None,
    pool: str | None,
    metrics_port: int | None,
) -> None:
    """A Celery worker on Redis.  Run separate ones for `--queues ring` and `--queues bulk`."""
    if pool is None and queues.strip() == "ring":
        # A ring task mostly waits on APNs/FCM (and, for a device they keep refusing, on its
        # retries until the ring is over): with one process per core, a few such devices would
        # hold every slot and delay everyone's ring.  Threads make many cheap slots in one process.
        pool, concurrency = "threads", concurrency or RING_THREADS
    pool = pool or "prefork"
    settings = cli_settings(ctx)
    _require_production(settings)
    quiet = _take_over_celery_logging(*_logging(settings, "json"))
    _multiprocess_metrics_dir("worker")
    from worker.runtime.celery_app import create_celery

    app = create_celery(settings)
    if metrics_port is not None:
        _serve_worker_metrics(metrics_port, settings.broker_url)
    argv = [
        *quiet,
        "worker",
        "--queues",
        queues,
        "--pool",
        pool,
        "--prefetch-multiplier",
        "1",
        "--hostname",
        f"{queues.replace(',', '-')}@%h",
        "--loglevel",
        settings.log_level,
        "--without-mingle",
        "--without-gossip",
    ]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    run_celery(app, argv)


@click.command()
@click.pass_context
def beat(ctx: click.Context) -> None:
    """Periodic jobs: the inbox sweeper (re-enqueues events a broker outage left behind)."""
    from worker.runtime.celery_app import create_celery

    settings = cli_settings(ctx)
    _require_production(settings)
    quiet = _take_over_celery_logging(*_logging(settings, "json"))
    run_celery(create_celery(settings), [*quiet, "beat", "--loglevel", settings.log_level])


def run_celery(app: Celery, argv: list[str]) -> None:
    """Run a Celery command (``worker``, ``beat``) for ``app`` and exit with its status.

    ``Celery.start`` and ``worker_main`` drop the status: they run Celery's click command with
    standalone mode off, which returns it, and discard the return value.  A worker stopped by
    "Unrecoverable error" (README: restarting) would then exit 0, and a supervisor that
    restarts only on failure would leave it down.  So this does what ``Celery.start`` does
    (the app as the ``--app`` option's default) and keeps the status."""
    from celery.bin.celery import celery as celery_command

    celery_command.params[0].default = app
    try:
        status = celery_command.main(args=argv, standalone_mode=False)
    finally:
        celery_command.params[0].default = None
    if isinstance(status, int) and status:
        raise SystemExit(status)


def _take_over_celery_logging(apply_logging: Callable[[], None], json_logs: bool) -> list[str]:
    """Keep Celery from configuring logging: with a ``setup_logging`` receiver it leaves the
    root logger alone (and calls the receiver in each pool process too).  Returns the Celery
    options that keep its start-up banner, which is printed rather than logged, off stdout
    when the logs are JSON lines."""
    from celery.signals import setup_logging

    setup_logging.connect(lambda **_: apply_logging(), weak=False)
    return ["--quiet"] if json_logs else []


def _serve_worker_metrics(port: int, broker_url: str | None) -> None:
    """Prometheus /metrics for this worker: the pool processes' multiprocess files, summed, and
    the queue depths.  Served by the main process, started before the pool so a port already
    in use stops the worker at once instead of leaving it unobserved."""
    from prometheus_client import start_http_server

    from worker.runtime.queue_metrics import build_registry
    from worker.runtime.tasks import BULK_QUEUE, RING_QUEUE

    start_http_server(port, registry=build_registry(broker_url, (RING_QUEUE, BULK_QUEUE)))


def _gunicorn_timeouts(settings: Settings) -> dict[str, int]:
    """gunicorn's own bounds, kept above the longest a request can wait on a hanging database
    or broker (`callpush config check`, "timeouts"), so they never cut a request short:

    - ``timeout``: a gthread worker whose main loop has not checked in for this long is killed
      and replaced (https://docs.gunicorn.org/en/stable/settings.html#timeout); request threads
      do not check in, so it catches a wedged process, not a slow request;
    - ``graceful_timeout``: on SIGTERM, in-flight webhooks get this long to finish (rolling
      restarts) before the worker is killed."""
    import math

    from worker.ops.config_check import webhook_worst_case_seconds

    longest = max(webhook_worst_case_seconds(settings))
    return {
        "timeout": max(30, math.ceil(longest * 3)),
        "graceful_timeout": max(20, math.ceil(longest + 10)),
    }


def _gunicorn_logger_class() -> type:
    """gunicorn's own messages ("Booting worker", "Worker timeout") go through the root logger,
    so they come out in the same format (JSON lines) as everything else."""
    from gunicorn.glogging import Logger

    class RootLogger(Logger):
        def setup(self, cfg: Any) -> None:
            super().setup(cfg)
            for handler in list(self.error_log.handlers):
                self.error_log.removeHandler(handler)
            self.error_log.propagate = True

    return RootLogger


def _close_after_unread_bodies(max_body_bytes: int) -> Callable[[Any, Any], None]:
    """gunicorn's ``pre_request`` hook.  A body over ``max_body_bytes`` is answered 413 without
    being read; gunicorn then discards at most 64 KiB of it and, if more is left, closes the
    connection, after having announced ``Connection: keep-alive``: the client's next webhook on
    that connection failed (20 of 30 times).  Such a request is answered ``Connection: close``
    instead, so the client opens a new connection (Stream retries network errors only twice,
    https://getstream.io/video/docs/api/webhooks/overview/).  A chunked body's size is unknown
    until it is read, so a chunked request closes its connection too (Stream sends lengths)."""

    def pre_request(_worker: Any, req: Any) -> None:
        for name, value in req.headers:
            if name == "TRANSFER-ENCODING" or (
                name == "CONTENT-LENGTH"
                and (not value.isascii() or not value.isdigit() or int(value) > max_body_bytes)
            ):
                req.force_close()
                return

    return pre_request


def _gunicorn_child_exit(server: Any, worker: Any) -> None:
    from worker.foundation.metrics import mark_process_dead

    mark_process_dead(worker.pid)


def _refuse_weak_admin_token(settings: Settings) -> None:
    from worker.ops.config_check import admin_token_problem

    problem = admin_token_problem(settings)
    if problem is not None:
        raise click.ClickException(f"refusing to start: {problem}")


def _uses_dev_key(settings: Settings) -> bool:
    """No Stream app configured (so the embedded dev app is used), or one with the public
    development secret."""
    if not settings.apps:
        return True
    return any(
        secret.get_secret_value() == DEV_API_SECRET
        for app in settings.apps
        for secret in app.api_secrets
    )


def _is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def _require_production(settings: Any) -> None:
    if not settings.broker_url:
        raise click.ClickException(
            "broker_url is not set (CALLPUSH_BROKER_URL=redis://…); "
            "for the embedded mode use `callpush run`"
        )
    if not settings.apps:
        raise click.ClickException(
            "no Stream app configured: set CALLPUSH_STREAM_API_KEY and CALLPUSH_STREAM_API_SECRET "
            "or [[apps]] in the config file"
        )

"""The long-running commands: run (embedded), web, worker, beat."""

from __future__ import annotations

import logging
from typing import Any

import click

from worker.commands import cli_settings


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--concurrency", default=4, show_default=True, type=int, help="worker threads")
@click.pass_context
def run(ctx: click.Context, host: str, port: int, concurrency: int) -> None:
    """Receiver and worker in one process (SQLite, no Redis): for a laptop or a small app."""
    from worker.embedded import run_embedded

    settings = cli_settings(ctx)
    _logging(settings.log_level)
    if settings.broker_url:
        raise click.ClickException(
            "broker_url is set: run `callpush web` and `callpush worker` for the production mode"
        )
    run_embedded(settings, host=host, port=port, concurrency=concurrency)


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
    _logging(settings.log_level)

    class Server(BaseApplication):
        def load_config(self) -> None:
            options: dict[str, Any] = {
                "bind": bind,
                "workers": workers,
                "threads": threads,
                "worker_class": "gthread",
                "timeout": 30,
                # SIGTERM: stop accepting, let in-flight webhooks finish (rolling restarts).
                "graceful_timeout": 20,
                # No access log: DELETE /devices/<token> would write whole device tokens.
                "accesslog": None,
            }
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
@click.option("--concurrency", "-c", default=None, type=int, help="processes (default: cores)")
@click.option("--pool", default="prefork", show_default=True)
@click.pass_context
def worker(ctx: click.Context, queues: str, concurrency: int | None, pool: str) -> None:
    """A Celery worker on Redis.  Run separate ones for `--queues ring` and `--queues bulk`."""
    from worker.celery_app import create_celery

    settings = cli_settings(ctx)
    _require_production(settings)
    app = create_celery(settings)
    argv = [
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
    app.worker_main(argv)


@click.command()
@click.pass_context
def beat(ctx: click.Context) -> None:
    """Periodic jobs: the inbox sweeper (re-enqueues events a broker outage left behind)."""
    from worker.celery_app import create_celery

    settings = cli_settings(ctx)
    _require_production(settings)
    create_celery(settings).start(["beat", "--loglevel", settings.log_level])


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

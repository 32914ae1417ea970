"""Operational endpoints: ``/healthz`` (the process answers), ``/readyz`` (it can do its job: the
database and the broker answer) and ``/metrics`` (Prometheus text format).

A load balancer should route by ``/readyz`` and a supervisor restart by ``/healthz``: a database
outage makes every process unready, and restarting them would not help.  Each readiness check is
bounded in time, so the probe answers within about two seconds even when a dependency hangs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING

from flask import Blueprint, Flask, Response, current_app, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import text

from worker.foundation import metrics
from worker.runtime import queue_metrics
from worker.runtime.tasks import BULK_QUEUE, RING_QUEUE
from worker.storage.database import Database

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("callpush.health")
blueprint = Blueprint("health", __name__)

DATABASE_TIMEOUT = 2.0
BROKER_TIMEOUT = 1.0
OK = "ok"


class _BoundedCheck:
    """Runs one check on a thread of its own and waits at most ``timeout`` for it.  A check that
    hangs (a blackholed database host) keeps its thread; while it does, later probes answer
    "still running" at once instead of piling more threads on the same hang.  The threads are
    daemons (not an executor's, which the interpreter joins at exit) so a hung check never
    holds up a worker's shutdown."""

    def __init__(self, name: str, check: Callable[[], None], timeout: float) -> None:
        self._name = name
        self._check = check
        self._timeout = timeout
        self._running: Future[None] | None = None
        self._lock = threading.Lock()

    def start(self) -> Future[None] | None:
        with self._lock:
            if self._running is not None and not self._running.done():
                return None
            future: Future[None] = Future()
            self._running = future
        threading.Thread(
            target=self._run, args=(future,), name=f"readyz-{self._name}", daemon=True
        ).start()
        return future

    def _run(self, future: Future[None]) -> None:
        future.set_running_or_notify_cancel()
        try:
            self._check()
        except BaseException as error:
            future.set_exception(error)
        else:
            future.set_result(None)

    def result(self, future: Future[None] | None) -> str:
        if future is None:
            return f"timed out (the previous {self._name} check is still running)"
        try:
            future.result(timeout=self._timeout)
        except FutureTimeout:
            return f"timed out after {self._timeout:g}s"
        except Exception as error:
            # Details go to the log only: /readyz is unauthenticated and the error may name
            # internal hosts.
            log.warning(
                "readiness: %s check failed: %s: %s", self._name, type(error).__name__, error
            )
            return f"failed: {type(error).__name__}"
        return OK


class Health:
    """Per app: the readiness checks and the scrape registry, built once (they hold a Redis
    client and a thread each)."""

    def __init__(self, db: Database, broker_url: str | None) -> None:
        self.registry: CollectorRegistry = queue_metrics.build_registry(
            broker_url, (RING_QUEUE, BULK_QUEUE)
        )
        self._checks = {
            "database": _BoundedCheck("database", lambda: _ping_db(db), DATABASE_TIMEOUT)
        }
        if broker_url:  # embedded mode: an in-process broker, nothing to reach
            self._checks["broker"] = _BoundedCheck(
                "broker", lambda: _ping_broker(broker_url), BROKER_TIMEOUT + 0.5
            )

    def readiness(self) -> dict[str, str]:
        # Started together, so the probe takes as long as the slowest check, not their sum.
        started = {name: check.start() for name, check in self._checks.items()}
        return {name: check.result(started[name]) for name, check in self._checks.items()}


def _ping_db(db: Database) -> None:
    with db.engine.connect() as connection:
        connection.execute(text("select 1"))


def _ping_broker(broker_url: str) -> None:
    client = queue_metrics.redis_client(broker_url, timeout=BROKER_TIMEOUT)
    if client is not None:
        try:
            client.ping()
        finally:
            client.close()
        return
    # Another kombu transport (AMQP, ...): one connection attempt.
    from kombu import Connection

    with Connection(broker_url, connect_timeout=BROKER_TIMEOUT) as connection:
        connection.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT)  # type: ignore[arg-type]  # celery-types says int; kombu takes seconds as a float


_HEALTH_LOCK = threading.Lock()


def health_of(app: Flask) -> Health:
    with _HEALTH_LOCK:
        found: Health | None = app.extensions.get("callpush.health")
        if found is None:
            ctx = app.extensions["callpush"]
            found = app.extensions["callpush.health"] = Health(ctx.db, ctx.settings.broker_url)
    return found


@blueprint.get("/healthz")
def healthz() -> ResponseReturnValue:
    # The version tells which processes of a rolling deploy run the new one.
    return jsonify(status="ok", version=current_app.config["CALLPUSH_VERSION"])


@blueprint.get("/readyz")
def readyz() -> ResponseReturnValue:
    checks = health_of(current_app).readiness()
    ready = all(result == OK for result in checks.values())
    return jsonify(status="ready" if ready else "unavailable", checks=checks), (
        200 if ready else 503
    )


@blueprint.get("/metrics")
def metrics_endpoint() -> ResponseReturnValue:
    # Imported here, like everything of prometheus_client (see worker.foundation.metrics).
    from prometheus_client import generate_latest

    body = generate_latest(health_of(current_app).registry)
    return Response(body, content_type=metrics.CONTENT_TYPE)

"""`callpush run`: receiver and worker in one process, on a SQLite file and an in-memory broker.

Nothing accepted is lost when the process is killed: a webhook is committed to the SQLite inbox
before it is answered, and at start-up every inbox event not yet processed is queued again.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from waitress.server import create_server

from webhook_app import create_app
from worker.foundation.settings import DEV_API_KEY, Settings
from worker.runtime.celery_app import create_celery
from worker.runtime.inbox_sweeper import requeue_unfinished
from worker.runtime.inprocess_worker import inprocess_worker
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head

log = logging.getLogger("callpush.embedded")


def run_embedded(settings: Settings, *, host: str, port: int, concurrency: int = 16) -> None:
    settings = settings.with_dev_app()
    if any(app.api_key == DEV_API_KEY for app in settings.apps):
        log.warning(
            "no Stream app configured: accepting webhooks signed with the development key %r "
            "(see config/callpush.example.toml)",
            DEV_API_KEY,
        )
    # Devices stored before they were kept per app belong to the one app served, if one.
    upgrade_to_head(settings.database_url, settings.single_app_key())
    db = Database(settings.database_url)
    celery = create_celery(settings)
    server = create_server(
        create_app(settings, db=db, celery=celery), host=host, port=port, threads=8
    )
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: draining", signum)
        stop.set()
        server.close()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with inprocess_worker(celery, concurrency=concurrency):
        recovered = requeue_unfinished(
            db, celery.handoff, older_than=None, max_attempts=settings.sweeper.max_attempts
        )
        log.info(
            "callpush listening on http://%s:%s/webhooks/stream (embedded, %d recovered events)",
            host,
            server.effective_port,
            recovered,
        )
        try:
            server.run()
        except OSError:
            if not stop.is_set():
                raise
    db.dispose()

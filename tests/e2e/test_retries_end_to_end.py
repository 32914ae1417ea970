"""Retries end where `fanout.max_retries` says, through a real Celery worker on Redis and on
RabbitMQ (where a retry's countdown goes through native delayed delivery, in whole seconds):
the event ends failed with the reason, never left "processing".

The bulk task used to pass ``max_retries=None`` to ``Task.retry``, which Celery reads as "the
task's default", 3: with fanout.max_retries above 3, Celery gave up first and the event stayed
"processing" for the sweeper to re-queue.  Here fanout.max_retries is 5.  And in a threads-pool
worker (this one, like `callpush run`'s) a retry was published through Celery's unconfigured
default app, to amqp://localhost: it never came back at all.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
from sqlalchemy import insert
from waitress.server import create_server

from tests.e2e.processes import free_port, wait_until
from tests.fakes.stream_api_plugin import stream_app_for
from webhook_app import create_app
from worker.foundation.settings import load_settings
from worker.runtime.celery_app import create_celery
from worker.runtime.inprocess_worker import inprocess_worker
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head
from worker.storage.models import Device, WebhookEvent
from worker.stream import samples as sample_events

pytestmark = [pytest.mark.services, pytest.mark.timeout(180)]

MAX_RETRIES = 5
FAILING_ALERT = "fail5xx" + "0" * 57  # the fake APNs answers 500 to it, every time


@dataclass
class Stack:
    db: Database
    port: int
    api_key: str
    secret: str

    def post(self, event: dict) -> int:
        body, headers = sample_events.signed_request(
            event, api_key=self.api_key, secret=self.secret
        )
        response = requests.post(
            f"http://127.0.0.1:{self.port}/webhooks/stream", data=body, headers=headers, timeout=10
        )
        assert response.status_code == 202, response.text
        return int(response.json()["event_id"])

    def row(self, event_id: int) -> WebhookEvent:
        with self.db.transaction() as session:
            row = session.get(WebhookEvent, event_id)
            session.expunge(row)
            return row

    def wait_finished(self, event_id: int) -> WebhookEvent:
        try:
            wait_until(
                lambda: self.row(event_id).status not in ("received", "processing"),
                60,
                message=f"event {event_id} finished",
            )
        except AssertionError:
            row = self.row(event_id)
            raise AssertionError(
                f"left {row.status} ({row.status_reason}) after {row.processing_attempts} runs"
            ) from None
        return self.row(event_id)


@pytest.fixture
def stack(
    postgres_url, broker_url, apns_settings, fcm_settings, fake_stream_api, monkeypatch
) -> Iterator[Stack]:
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    app = stream_app_for(fake_stream_api)
    secret = app.signing_secret
    settings = load_settings(
        database_url=postgres_url,
        broker_url=broker_url,
        apps=[{"api_key": app.api_key, "api_secrets": [secret], "base_url": app.base_url}],
        apns=apns_settings.model_dump(),
        fcm=fcm_settings.model_dump(),
        # Retries every 0.5 s (the floor of the backoff), more of them than Celery's default 3.
        fanout={
            "max_retries": MAX_RETRIES,
            "retry_backoff_seconds": 0.01,
            "retry_backoff_max_seconds": 0.01,
        },
    )
    upgrade_to_head(postgres_url)
    db = Database(postgres_url)
    with db.transaction() as session:
        session.execute(
            insert(Device),
            [
                {
                    "api_key": app.api_key,
                    "user_id": "bob",
                    "platform": "apns",
                    "token": FAILING_ALERT,
                    "source": "local",
                }
            ],
        )
    celery = create_celery(settings)
    port = free_port()
    server = create_server(create_app(settings, db=db, celery=celery), host="127.0.0.1", port=port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    with inprocess_worker(celery, concurrency=2):
        yield Stack(db, port, app.api_key, secret)
    server.close()
    db.dispose()


def test_planning_retries_stop_at_max_retries_and_the_event_fails(stack, fake_stream_api):
    fake_stream_api.fail_next(1000, 503)  # Stream's QueryCallMembers is down for good
    event = sample_events.member_event("call.session_started", None, [], created_by="alice")
    row = stack.wait_finished(stack.post(event))
    assert row.status == "failed"
    assert row.status_reason.startswith("could not list the call's members from Stream")
    # The first run and MAX_RETRIES retries, each a run of the task.
    assert row.processing_attempts == MAX_RETRIES + 1


def test_chunk_retries_stop_at_max_retries_and_the_event_fails(stack, fake_apns):
    event = sample_events.member_event("call.notification", "alice", ["alice", "bob"])
    row = stack.wait_finished(stack.post(event))
    assert row.status == "failed" and row.status_reason == "reached nobody (1 recipient): 1 failed"
    assert fake_apns.tokens().count(FAILING_ALERT) == MAX_RETRIES + 1

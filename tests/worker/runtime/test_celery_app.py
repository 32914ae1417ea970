"""The Celery app carries its own services: two callpush apps in one process, each task run with
the services of the app that registered it (no module global, no "last app built wins")."""

from __future__ import annotations

import json
import time

import pytest

from worker.foundation.settings import load_settings
from worker.runtime.celery_app import CallpushCelery, create_celery
from worker.runtime.inprocess_worker import inprocess_worker
from worker.runtime.tasks import PROCESS_EVENT
from worker.storage.inbox import NewWebhook, load_event, store_webhook
from worker.storage.migrations import upgrade_to_head
from worker.stream import samples


@pytest.fixture
def two_apps(tmp_path, isolated_settings):
    built: list[CallpushCelery] = []
    for name in ("first", "second"):
        url = f"sqlite:///{tmp_path / name}.db"
        upgrade_to_head(url)
        built.append(create_celery(load_settings(database_url=url, broker_url=None)))
    yield built
    for app in built:
        app.close_services()
        app.close()


def stored_notification(app: CallpushCelery, caller: str) -> int:
    """A call.notification to nobody but its caller: processing it marks it processed at once
    (no fan-out chunk to wait for)."""
    event = samples.member_event("call.notification", caller, [])
    with app.services.db.transaction() as session:
        return store_webhook(
            session,
            NewWebhook(
                webhook_id=f"wh-{caller}",
                api_key=app.settings.apps[0].api_key if app.settings.apps else "k",
                event_type=event["type"],
                body=json.dumps(event),
            ),
        ).event_id


def status(app: CallpushCelery, event_id: int) -> str:
    with app.services.db.transaction() as session:
        row = load_event(session, event_id)
        assert row is not None
        return row.status


def test_each_app_registers_its_own_tasks(two_apps):
    first, second = two_apps
    assert first.tasks[PROCESS_EVENT] is not second.tasks[PROCESS_EVENT]
    assert first.tasks[PROCESS_EVENT].app is first
    assert second.tasks[PROCESS_EVENT].app is second
    assert first.services is not second.services
    assert first.services.db.url != second.services.db.url


def test_a_task_runs_with_the_services_of_its_own_app(two_apps):
    first, second = two_apps
    in_first, in_second = stored_notification(first, "alice"), stored_notification(second, "carol")
    # Run through each app's own task object: each reads its own database.
    assert (
        second.tasks[PROCESS_EVENT].apply(args=[in_second]).get(disable_sync_subtasks=False)
        == "processed"
    )
    assert status(second, in_second) == "processed"
    assert status(first, in_first) == "received"  # untouched by the second app's task
    assert (
        first.tasks[PROCESS_EVENT].apply(args=[in_first]).get(disable_sync_subtasks=False)
        == "processed"
    )
    assert status(first, in_first) == "processed"


def test_an_in_process_worker_of_the_first_app_built_uses_that_app(two_apps):
    """The worker of the app built first (the second app is the newer one) takes a message
    from its broker and runs it with its own services: Celery's threads pool looks a task up
    in its thread's current app, which the pool sets to the worker's (ThreadPool)."""
    first, second = two_apps
    event_id = stored_notification(first, "alice")
    with inprocess_worker(first, concurrency=2):
        first.handoff.queue_event(event_id, "call.notification")
        deadline = time.monotonic() + 30
        while status(first, event_id) != "processed" and time.monotonic() < deadline:
            time.sleep(0.05)
    assert status(first, event_id) == "processed"
    assert second.built_services() is None or status(second, event_id) != "processed"

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

import pytest

from worker.stream import samples as sample_events

pytestmark = [pytest.mark.services, pytest.mark.timeout(180)]

MAX_RETRIES = 5
FAILING_ALERT = "fail5xx" + "0" * 57  # the fake APNs answers 500 to it, every time


@pytest.fixture
def stack(start_stack, broker_url):
    # Retries every 0.5 s (the floor of the backoff), more of them than Celery's default 3.
    fanout = {
        "max_retries": MAX_RETRIES,
        "retry_backoff_seconds": 0.01,
        "retry_backoff_max_seconds": 0.01,
    }
    with start_stack(broker_url=broker_url, fanout=fanout) as running:
        running.add_devices([{"user_id": "bob", "platform": "apns", "token": FAILING_ALERT}])
        yield running


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

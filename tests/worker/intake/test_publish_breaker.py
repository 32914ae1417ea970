"""Publishing through the broker's circuit breaker, against a real Redis reached through the
blackhole (tests/fakes/blackhole.py): bounded publishes, skips while open, the probe, and the drain
of the inbox (rings first) the moment the broker answers again."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from kombu.utils.json import loads
from sqlalchemy import make_url, update

from tests.fakes.blackhole import Blackhole
from worker.foundation.circuit_breaker import CircuitState
from worker.foundation.settings import BrokerSettings, load_settings
from worker.intake.publish_breaker import PublishBreaker
from worker.runtime.celery_app import create_celery
from worker.runtime.inbox_sweeper import requeue_unpublished
from worker.storage.database import Database
from worker.storage.inbox import NewWebhook, store_webhook
from worker.storage.migrations import upgrade_to_head
from worker.storage.models import EventStatus, WebhookEvent

pytestmark = pytest.mark.services

FAST = BrokerSettings(publish_timeout_seconds=0.3, breaker_failures=1, breaker_reset_seconds=0.3)


@pytest.fixture
def inbox(sqlite_url: str) -> Iterator[Database]:
    upgrade_to_head(sqlite_url)
    db = Database(sqlite_url)
    yield db
    db.dispose()


def store(db: Database, event_type: str, **values) -> int:  # type: ignore[no-untyped-def]
    webhook = NewWebhook(
        webhook_id=f"wh-{time.monotonic_ns()}", api_key="k", event_type=event_type, body="{}"
    )
    with db.transaction() as session:
        event_id = store_webhook(session, webhook).event_id
        if values:
            session.execute(
                update(WebhookEvent).where(WebhookEvent.id == event_id).values(**values)
            )
    return event_id


def queued_ids(redis_url: str, queue: str) -> list[int]:
    client = redis.Redis.from_url(redis_url)
    try:
        # kombu LPUSHes and workers BRPOP: the oldest message is at the right end.  The body
        # is Celery's [args, kwargs, embed], base64-encoded.
        messages = [loads(m) for m in reversed(client.lrange(queue, 0, -1))]
        return [loads(base64.b64decode(m["body"]))[0][0] for m in messages]
    finally:
        client.close()


def publisher_through(blackhole: Blackhole, redis_url: str, drain=None):  # type: ignore[no-untyped-def]
    url = make_url(redis_url)
    settings = load_settings(
        broker_url=url.set(port=blackhole.port).render_as_string(hide_password=False),
        database_url="sqlite://",
        broker=FAST.model_dump(),
    )
    celery = create_celery(settings, publisher=True)
    return celery, PublishBreaker(celery, settings.broker, drain)


def test_a_hung_broker_costs_one_bounded_publish_then_none(redis_url, blackhole):
    celery, breaker = publisher_through(blackhole, redis_url)
    started = time.monotonic()
    assert not celery.handoff.queue_event_guarded(breaker, 1, "call.ring")
    first = time.monotonic() - started
    # The caller waits publish_timeout_seconds at most, whatever kombu's retry does inside.
    assert FAST.publish_timeout_seconds <= first < FAST.publish_timeout_seconds + 1.0
    assert breaker.state is CircuitState.OPEN
    started = time.monotonic()
    for event_id in range(2, 50):
        assert not celery.handoff.queue_event_guarded(breaker, event_id, "call.missed")
    assert time.monotonic() - started < 0.1  # skipped: no publish attempted
    # Remembered for the drain: exactly the events this process did not publish.
    assert breaker.unpublished() == {1: "call.ring"} | {i: "call.missed" for i in range(2, 50)}
    breaker.close()


def test_when_the_broker_is_back_what_was_not_published_is_queued_once_rings_first(
    redis_url, blackhole, inbox
):
    drained: list[int] = []

    def drain(events) -> int:  # type: ignore[no-untyped-def]
        def publish(event_id: int, kind: str) -> bool:
            return celery.handoff.queue_event_guarded(breaker, event_id, kind)

        drained.append(requeue_unpublished(inbox, publish, events))
        return drained[-1]

    celery, breaker = publisher_through(blackhole, redis_url, drain)
    stored = []
    for kind in ("call.missed", "call.ring", "call.notification", "call.ring", "call.ring"):
        event_id = store(inbox, kind)
        stored.append((event_id, kind))
        assert not celery.handoff.queue_event_guarded(breaker, event_id, kind)  # failed or skipped
    assert breaker.state is CircuitState.OPEN
    # Meanwhile the sweeper queued one of them and a worker started it: not queued again.
    started_elsewhere = stored[-1][0]
    with inbox.transaction() as session:
        session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id == started_elsewhere)
            .values(status=EventStatus.PROCESSING)
        )
    # Queued normally before the outage: not this breaker's business.
    before = store(inbox, "call.ring")
    assert queued_ids(redis_url, "ring") == [] and queued_ids(redis_url, "bulk") == []

    # The first publish, abandoned at its deadline, goes on in the background (one retry on a
    # fresh connection); let it fail before the broker is back, or it would get through then.
    time.sleep(4 * FAST.publish_timeout_seconds + 0.5)
    url = make_url(redis_url)
    blackhole.forward_to(url.host or "127.0.0.1", url.port or 6379)
    deadline = time.monotonic() + 5
    while not drained and time.monotonic() < deadline:
        time.sleep(0.02)
    assert drained == [4]
    assert breaker.state is CircuitState.CLOSED and breaker.unpublished() == {}
    rings = [i for i, kind in stored[:-1] if kind == "call.ring"]
    assert queued_ids(redis_url, "ring") == rings
    assert queued_ids(redis_url, "bulk") == [i for i, kind in stored if kind != "call.ring"]
    assert before not in queued_ids(redis_url, "ring")
    # Publishing works again.
    assert celery.handoff.queue_event_guarded(breaker, 999, "call.ring")
    breaker.close()


def test_the_drain_publishes_rings_first_then_the_rest_oldest_first(inbox):
    kinds = ["call.missed", "call.ring", "call.notification", "call.ring", "call.missed"]
    ids = {store(inbox, kind): kind for kind in kinds}
    done = store(inbox, "call.ring", status=EventStatus.PROCESSED)
    published: list[int] = []

    def publish(event_id: int, _kind: str) -> bool:
        published.append(event_id)
        return True

    assert requeue_unpublished(inbox, publish, {**ids, done: "call.ring"}) == 5
    rings = [i for i, kind in ids.items() if kind == "call.ring"]
    assert published == rings + [i for i in ids if i not in rings]


def test_a_slow_publish_that_gets_through_closes_the_circuit_and_drains_what_was_skipped():
    drained: list[dict[int, str]] = []
    settings = load_settings(broker_url=None, database_url="sqlite://")
    breaker = PublishBreaker(
        create_celery(settings), FAST, lambda events: len(drained.append(dict(events)) or events)
    )
    release = threading.Event()
    started = time.monotonic()
    slow = breaker.publish("ring", lambda: release.wait(5) and None, (1, "call.ring"))
    assert not slow  # past the deadline
    assert time.monotonic() - started < FAST.publish_timeout_seconds + 1.0
    assert breaker.state is CircuitState.OPEN
    assert not breaker.publish("ring", lambda: None, (2, "call.ring"))  # skipped while open
    release.set()  # the slow publish succeeds after all: the broker is fine
    deadline = time.monotonic() + 5
    while not drained and time.monotonic() < deadline:
        time.sleep(0.01)
    assert breaker.state is CircuitState.CLOSED
    assert drained == [{2: "call.ring"}]  # event 1 got through: not queued again
    assert breaker.publish("ring", lambda: None, (3, "call.ring"))
    breaker.close()

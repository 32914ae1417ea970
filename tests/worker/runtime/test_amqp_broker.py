"""RabbitMQ as the broker (worker/runtime/amqp_broker.py), against the real server."""

from __future__ import annotations

import pytest
from kombu import Connection, Queue

from worker.foundation.settings import load_settings
from worker.runtime import amqp_broker, tasks
from worker.runtime.celery_app import create_celery
from worker.runtime.tasks import BULK_QUEUE, RING_QUEUE


def test_only_amqp_urls_are_amqp() -> None:
    assert amqp_broker.is_amqp("amqp://u:p@rabbit:5672/callpush")
    assert amqp_broker.is_amqp("pyamqp://rabbit//")
    assert amqp_broker.is_amqp("amqps://rabbit//")
    assert not amqp_broker.is_amqp("redis://127.0.0.1:6379/0")
    assert not amqp_broker.is_amqp(None)


def test_a_retry_countdown_is_whole_seconds_on_amqp_only() -> None:
    # Native delayed delivery refuses a countdown under 1 s (kombu calculate_routing_key).
    assert amqp_broker.countdown_for("amqp://rabbit//", 0.5) == 1.0
    assert amqp_broker.countdown_for("amqp://rabbit//", 2.01) == 3.0
    assert amqp_broker.countdown_for("redis://127.0.0.1/0", 0.5) == 0.5


def test_the_web_publisher_waits_no_longer_than_publish_timeout() -> None:
    settings = load_settings(
        broker_url="amqp://guest:guest@127.0.0.1:5672//", broker={"publish_timeout_seconds": 0.3}
    )
    web = create_celery(settings, publisher=True).conf
    assert web.broker_connection_timeout == 0.3
    assert web.broker_transport_options == {
        "confirm_publish": True,
        "read_timeout": 0.3,
        "write_timeout": 0.3,
    }
    worker = create_celery(settings).conf
    assert worker.broker_connection_timeout == amqp_broker.WORKER_CONNECT_SECONDS
    assert worker.broker_transport_options["read_timeout"] == amqp_broker.WORKER_SOCKET_SECONDS


@pytest.mark.services
def test_each_event_lands_in_its_own_durable_quorum_queue(rabbitmq_url: str) -> None:
    app = create_celery(load_settings(broker_url=rabbitmq_url), publisher=True)
    app.handoff.queue_event(1, "call.ring")
    app.handoff.queue_event(2, "call.missed")
    app.handoff.queue_event(3, "call.missed")
    assert amqp_broker.queue_depths(rabbitmq_url, (RING_QUEUE, BULK_QUEUE), 2.0) == {
        RING_QUEUE: 1,
        BULK_QUEUE: 2,
    }
    # Declared as callpush declares them (durable, quorum): no mismatch.
    assert amqp_broker.queue_type_problems(rabbitmq_url, (RING_QUEUE, BULK_QUEUE), 2.0) == []
    with Connection(rabbitmq_url) as connection:
        message = Queue(RING_QUEUE).bind(connection.default_channel).get(no_ack=True)
        assert message is not None and message.headers["task"] == tasks.PROCESS_RING
        assert message.delivery_info["exchange"] == RING_QUEUE

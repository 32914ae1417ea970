"""The Redis broker transport (worker/runtime/broker_transport.py) on a real Redis."""

from __future__ import annotations

import pytest
import redis
from kombu import Connection, Exchange, Queue

from worker.foundation.settings import load_settings
from worker.runtime.broker_transport import TRANSPORT, Transport
from worker.runtime.celery_app import create_celery

pytestmark = pytest.mark.services

QUEUE = Queue("transport-test", Exchange("transport-test"), routing_key="transport-test")


def channel_holding_an_unacked_message(connection: Connection, redis_url: str):
    with Connection(redis_url) as producer:
        producer.SimpleQueue(QUEUE).put({"n": 1})
    channel = connection.default_channel
    QUEUE(channel).declare()
    assert channel.basic_get(QUEUE.name) is not None  # delivered, not acknowledged
    assert len(channel.qos._delivered) == 1
    return channel


def test_celery_uses_it_for_a_redis_broker(redis_url, tmp_path) -> None:
    settings = load_settings(
        database_url=f"sqlite:///{tmp_path / 'callpush.db'}",
        broker_url=redis_url,
        apps=[{"api_key": "k", "api_secrets": ["s"]}],
    )
    app = create_celery(settings)
    assert app.conf.broker_transport == TRANSPORT
    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, Transport)
        with connection.SimpleQueue(QUEUE) as queue:  # the URL's host and db are used
            queue.put({"ring": 1})
            message = queue.get(timeout=2)
            assert message.payload == {"ring": 1}
            message.ack()


def test_closing_after_the_transport_was_detached_leaves_the_messages_to_redis(redis_url):
    # The state Celery's consumer leaves after losing Redis: collect() detached the transport
    # while the channel, whose first close failed part-way, still holds unacked messages.
    connection = Connection(redis_url, transport=TRANSPORT)
    channel_holding_an_unacked_message(connection, redis_url)
    connection._do_close_transport()
    connection.close()  # kombu's own transport raises AttributeError here (below)
    # Still in Redis's unacked set: restored after the visibility timeout.
    assert redis.Redis.from_url(redis_url).hlen("unacked") == 1


def test_a_late_ack_on_a_closed_channel_is_a_connection_error(redis_url):
    connection = Connection(redis_url, transport=TRANSPORT)
    channel = channel_holding_an_unacked_message(connection, redis_url)
    [tag] = list(channel.qos._delivered)
    channel.qos._pool = channel._pool = None  # as after the pools were disconnected
    channel.connection = None  # as after close: the transport is gone
    with pytest.raises(connection.connection_errors):
        channel.basic_ack(tag)  # kombu's Message.ack_log_error logs this one ("Couldn't ack")
    assert redis.Redis.from_url(redis_url).hlen("unacked") == 1


def test_kombus_own_transport_fails_in_that_state(redis_url):
    # If this starts passing, kombu has fixed the race and worker/runtime/broker_transport.py can
    # go.
    connection = Connection(redis_url)
    channel_holding_an_unacked_message(connection, redis_url)
    connection._do_close_transport()
    with pytest.raises(AttributeError, match="hostname"):
        connection.close()

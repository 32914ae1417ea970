"""RabbitMQ (AMQP 0-9-1) as the broker: what differs from Redis, in one place.

- ``ring`` and ``bulk`` are durable quorum queues (https://www.rabbitmq.com/docs/quorum-queues):
  replicated, so a message survives the loss of a node; a message stays in the queue until the
  worker acks it (late acks), and a lost connection returns it at once (no visibility timeout).
- Each queue keeps its own exchange and routing key, so a message lands in exactly one queue as
  on Redis; the exchanges are *topic* exchanges because Celery's countdowns on quorum queues go
  through native delayed delivery (https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/rabbitmq.html#using-quorum-queues),
  which cannot route to a direct exchange (the worker would then hold every retry's message
  until its countdown, which quorum queues, without global QoS, do not allow for).
- Publishes are confirmed by the broker (``confirm_publish``): a publish returns once RabbitMQ
  has the message, or raises.
- Every socket wait is bounded like the Redis ones (worker/runtime/celery_app.py).

Queue depth is read with a passive ``queue.declare`` (its ``message_count``); the oldest
message's age cannot be read on AMQP without consuming it, so that gauge is Redis-only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from kombu import Connection, Exchange, Queue

log = logging.getLogger("callpush.broker")

AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp"})
QUORUM = {"x-queue-type": "quorum"}
# A worker's sockets: connects as the Redis worker's (2 s); a read or write that stalls this
# long means the broker is gone (Celery's AMQP heartbeats, broker_heartbeat = 120 s, catch a
# connection that went silent).
WORKER_CONNECT_SECONDS = 2.0
WORKER_SOCKET_SECONDS = 5.0


def is_amqp(broker_url: str | None) -> bool:
    return bool(broker_url) and urlsplit(broker_url or "").scheme in AMQP_SCHEMES


def queues(names: Sequence[str]) -> list[Queue]:
    """Durable quorum queues, each bound to its own topic exchange by its own name."""
    return [
        Queue(name, Exchange(name, type="topic"), routing_key=name, queue_arguments=QUORUM)
        for name in names
    ]


def celery_config(timeout: float, publisher: bool) -> dict[str, Any]:
    """The Celery settings of an AMQP broker.  ``timeout``: ``broker.publish_timeout_seconds``,
    every socket wait of a publishing-only process (the web receiver)."""
    connect = timeout if publisher else WORKER_CONNECT_SECONDS
    socket_wait = timeout if publisher else WORKER_SOCKET_SECONDS
    return {
        "broker_connection_timeout": connect,
        # Passed to amqp.Connection (kombu's pyamqp transport): SO_RCVTIMEO / SO_SNDTIMEO.
        "broker_transport_options": {
            "confirm_publish": True,
            "read_timeout": socket_wait,
            "write_timeout": socket_wait,
        },
        # Queues Celery declares on its own (none today) are quorum queues too.
        "task_default_queue_type": "quorum",
        "task_default_exchange_type": "topic",
        # Quorum queues refuse a global QoS: the worker's prefetch becomes per consumer and
        # static (worker_prefetch_multiplier x concurrency), which is what we ask for anyway.
        "worker_detect_quorum_queues": True,
        # `callpush worker` names its node after its queues and host (docker/healthcheck.py
        # pings that name), so two workers of the same queues on one host share a name.  On
        # Redis they share its remote-control mailbox; on RabbitMQ that mailbox is an
        # exclusive queue by default, and the second worker stopped at start with 405
        # RESOURCE_LOCKED.  Shared here too: a control command reaches one of them.
        "control_queue_exclusive": False,
    }


def countdown_for(broker_url: str | None, delay: float) -> float:
    """The countdown to publish a retry with.  Native delayed delivery counts whole seconds
    and refuses a countdown under one (kombu's ``calculate_routing_key``), so on AMQP a delay
    is rounded up: the message then reaches the queue when it is due, never before."""
    if is_amqp(broker_url):
        return float(max(1, math.ceil(delay)))
    return delay


def short_connection(broker_url: str, timeout: float) -> Connection:
    """A connection for probes and scrapes, every wait bounded by ``timeout``."""
    return Connection(
        broker_url,
        connect_timeout=timeout,
        transport_options={"read_timeout": timeout, "write_timeout": timeout},
    )


def queue_depths(broker_url: str, names: Sequence[str], timeout: float) -> dict[str, int | None]:
    """Messages ready in each queue (a passive ``queue.declare``); None for a queue that does
    not exist yet (no worker has declared it).  Raises when the broker does not answer."""
    from amqp.exceptions import NotFound

    depths: dict[str, int | None] = {}
    with short_connection(broker_url, timeout) as connection:
        connection.ensure_connection(max_retries=1, timeout=timeout)  # type: ignore[arg-type]  # celery-types says int; kombu takes seconds as a float
        for name in names:
            # A 404 closes the channel, so each queue is asked on a channel of its own.
            channel = connection.channel()
            try:
                # An amqp channel (the stubs type it as kombu's abstract StdChannel).
                declared = channel.queue_declare(name, passive=True)  # type: ignore[attr-defined]
                depths[name] = declared.message_count
            except NotFound:
                depths[name] = None
            finally:
                _close_quietly(channel)
    return depths


def queue_type_problems(broker_url: str, names: Sequence[str], timeout: float) -> list[str]:
    """For each queue that exists, is it the durable quorum queue callpush declares?  Asked
    by declaring it as callpush would, which changes nothing on a queue that already exists
    (RabbitMQ answers 406 PRECONDITION_FAILED when its type or arguments differ)."""
    from amqp.exceptions import PreconditionFailed

    problems = []
    depths = queue_depths(broker_url, names, timeout)
    with short_connection(broker_url, timeout) as connection:
        for queue in queues([n for n in names if depths[n] is not None]):
            channel = connection.channel()
            try:
                queue.bind(channel).queue_declare()
            except PreconditionFailed as error:
                problems.append(f"{queue.name}: {error.reply_text}")
            finally:
                _close_quietly(channel)
    return problems


def _close_quietly(channel: Any) -> None:
    try:
        channel.close()
    except Exception:  # already closed by the broker's answer
        log.debug("closing a probe channel failed", exc_info=True)

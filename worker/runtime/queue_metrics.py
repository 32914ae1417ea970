"""What a scrape reads from the broker: each Celery queue's depth and the age of its oldest
message (from the time callpush stamps on every message it publishes), and the registry a
``/metrics`` endpoint serves.  The metrics themselves are defined in
:mod:`worker.foundation.metrics`."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import redis

from worker.foundation.metrics import BuildInfoCollector, define_metrics, multiprocess_dir
from worker.runtime.amqp_broker import is_amqp, queue_depths

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("callpush.metrics")

# Set on every message callpush publishes (worker/runtime/tasks.py): the Unix time from which it is
# due (when it was queued, or when a retry's countdown ends), which the queue age is read from.
# Celery's messages carry no such time of their own.
READY_AT_HEADER = "callpush_ready_at"


class QueueDepthCollector:
    """``callpush_queue_depth{queue}``: messages waiting in each Celery queue, read from Redis
    (``LLEN <queue>``, where kombu keeps a queue) at scrape time; and
    ``callpush_queue_oldest_message_age_seconds{queue}``: how long the message next in line
    has waited since it was due (0 for an empty queue), from the time callpush stamped on it
    when queuing it (kombu pushes at the list's head and workers pop its tail, so the tail is
    the oldest). On RabbitMQ only the depth, from a passive ``queue.declare`` on a short-lived
    connection (its ``message_count``: ready messages, not those a worker holds unacked); AMQP has
    no way to look at a queue's next message without taking it (worker/runtime/amqp_broker.py).
    Nothing for the embedded in-memory broker or another broker, and nothing (logged) when the
    broker does not answer: a scrape must never fail or hang because the broker is down."""

    def __init__(self, broker_url: str | None, queues: Sequence[str]) -> None:
        self._queues = tuple(queues)
        self._client = redis_client(broker_url) if broker_url else None
        self._amqp_url = broker_url if is_amqp(broker_url) else None

    def describe(self) -> Iterable[Metric]:
        # Registering must not talk to Redis (CollectorRegistry.register asks for the names).
        return []

    def collect(self) -> Iterable[Metric]:
        if self._amqp_url is not None:
            return self._collect_amqp(self._amqp_url)
        if self._client is None:
            return []
        from prometheus_client.core import GaugeMetricFamily

        try:
            with self._client.pipeline(transaction=False) as pipe:
                for queue in self._queues:
                    pipe.llen(queue)
                    pipe.lindex(queue, -1)
                answers = pipe.execute()
        except Exception as error:  # redis raises its own errors and OSError subclasses
            log.warning("queue depth not collected: %s: %s", error.__class__.__name__, error)
            return []
        gauge = GaugeMetricFamily(
            "callpush_queue_depth", "Messages waiting in each Celery queue.", labels=["queue"]
        )
        age = GaugeMetricFamily(
            "callpush_queue_oldest_message_age_seconds",
            "Seconds the oldest message of each Celery queue has waited (0: empty).",
            labels=["queue"],
        )
        now = time.time()
        for index, queue in enumerate(self._queues):
            depth, oldest = answers[2 * index], answers[2 * index + 1]
            gauge.add_metric([queue], float(depth))
            waited = 0.0 if oldest is None else queued_seconds(oldest, now)
            if waited is not None:  # None: a message without the stamp (left unmeasured)
                age.add_metric([queue], waited)
        return [gauge, age]

    def _collect_amqp(self, url: str) -> Iterable[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        try:
            depths = queue_depths(url, self._queues, timeout=SCRAPE_BROKER_TIMEOUT_SECONDS)
        except Exception as error:  # amqp's own errors and OSError subclasses
            log.warning("queue depth not collected: %s: %s", error.__class__.__name__, error)
            return []
        gauge = GaugeMetricFamily(
            "callpush_queue_depth", "Messages waiting in each Celery queue.", labels=["queue"]
        )
        for queue, depth in depths.items():
            gauge.add_metric([queue], float(depth or 0))  # not declared yet: nothing waits
        return [gauge]


def queued_seconds(raw_message: bytes, now: float) -> float | None:
    """How long a message (kombu's JSON envelope, as the Redis transport stores it) has waited,
    since it was due, from :data:`READY_AT_HEADER`; None when it carries no such stamp."""
    try:
        headers = json.loads(raw_message).get("headers") or {}
        ready_at = float(headers[READY_AT_HEADER])
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return max(0.0, now - ready_at)


def enqueue_headers(countdown: float = 0.0) -> dict[str, float]:
    """The headers of a message callpush publishes: the time it is due, ``countdown`` seconds
    from now.  A retry needs its own (Celery would copy the first attempt's), or it would
    look as old as the first attempt while it waits out its countdown."""
    return {READY_AT_HEADER: time.time() + max(0.0, countdown)}


# Every wait of a scrape's broker round trip (connect, each read and write).
SCRAPE_BROKER_TIMEOUT_SECONDS = 1.0


def redis_client(broker_url: str, timeout: float = 1.0) -> redis.Redis | None:
    """A Redis client for a ``redis://`` / ``rediss://`` broker URL, with short timeouts (for
    probes and scrapes, never for the broker itself); None for any other broker."""
    if urlsplit(broker_url).scheme not in ("redis", "rediss"):
        return None
    return redis.Redis.from_url(broker_url, socket_connect_timeout=timeout, socket_timeout=timeout)


def build_registry(
    broker_url: str | None, queues: Sequence[str], *, path: str | None = None
) -> CollectorRegistry:
    """What a scrape exposes: in multiprocess mode the merged files of every process (``path``,
    default ``PROMETHEUS_MULTIPROC_DIR``), else this process's own registry; plus the queue
    depths read from the broker and the build info."""
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    path = path or multiprocess_dir()
    if path:
        MultiProcessCollector(registry, path=path)
    else:
        define_metrics()  # defined, so a scrape names them before anything was counted
        # The default registry as one collector of this one (it has no describe(), so it is
        # registered without its names being collected).
        registry.register(REGISTRY)
    registry.register(QueueDepthCollector(broker_url, queues))
    registry.register(BuildInfoCollector())
    return registry

"""Prometheus metrics: defined once here, recorded where the facts happen (the webhook receiver,
:mod:`worker.push_outcomes`), exposed by the web app's ``/metrics`` and by
``callpush worker --metrics-port``.

Several processes: gunicorn workers and Celery prefork children each count their own.  Under
`callpush web` / `callpush worker` prometheus_client's multiprocess mode is on (the command sets
``PROMETHEUS_MULTIPROC_DIR``): every process writes its values to files there and a scrape adds
them up.  `callpush run` is one process with the plain registry.

prometheus_client fixes its mode when it is first imported, and the CLI imports most of the code
base before a command runs.  So this module imports prometheus_client, and creates the metrics,
only on first use (:func:`_metrics`), never at import: importing it from anywhere is harmless.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import redis

from worker.push.base import PushOutcome
from worker.storage.models import utcnow
from worker.version import callpush_version, python_version

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("callpush.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The classic text format, which is what generate_latest writes; every Prometheus reads it.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNKNOWN = "unknown"

# A ring is sent within milliseconds of the webhook; a retried one within the ring (≤ 30-60 s).
LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    0.75,
    1.0,
    1.5,
    2.5,
    5.0,
    10.0,
    15.0,
    30.0,
)


@dataclass(frozen=True, slots=True)
class _Metrics:
    webhooks: Counter
    pushes: Counter
    push_latency: Histogram
    tokens_disabled: Counter
    call_type_fetches: Counter
    circuit_state: Gauge
    publishes_skipped: Counter


_created: _Metrics | None = None
_create_lock = threading.Lock()


def _metrics() -> _Metrics:
    """The metrics, created (and registered in the default registry) once per process; under a
    lock, because registering the same name twice is an error."""
    global _created
    if _created is None:
        with _create_lock:
            if _created is None:
                _created = _define()
    return _created


def _define() -> _Metrics:
    from prometheus_client import Counter, Gauge, Histogram

    return _Metrics(
        webhooks=Counter(
            "callpush_webhooks",
            "Stream webhooks answered, by event type and outcome "
            "(accepted, duplicate, ignored, processed, or the HTTP status of a rejection).",
            ["type", "outcome"],
        ),
        pushes=Counter(
            "callpush_pushes",
            "Provider answers to pushes, by provider, platform and result "
            "(sent, token_invalid, retry, failed, unconfirmed: a ring whose answer was lost).",
            ["provider", "platform", "result"],
        ),
        push_latency=Histogram(
            "callpush_push_latency_seconds",
            "Time from the webhook's receipt to the provider's answer, per push.",
            buckets=LATENCY_BUCKETS,
        ),
        tokens_disabled=Counter(
            "callpush_tokens_disabled",
            "Device tokens disabled because the provider called them invalid, by reason.",
            ["reason"],
        ),
        call_type_fetches=Counter(
            "callpush_stream_call_type_fetches",
            "Fetches of Stream's call-type push settings (apps with push_settings_source = "
            '"stream"), by result (ok, not_found, failed: the last good copy is kept).',
            ["result"],
        ),
        # livemax: over the live processes, the worst state (a process whose circuit is open).
        circuit_state=Gauge(
            "callpush_circuit_breaker_state",
            "State of a circuit breaker: 0 closed, 1 half-open, 2 open (the worst of the live "
            "processes), by breaker (broker, database).",
            ["breaker"],
            multiprocess_mode="livemax",
        ),
        publishes_skipped=Counter(
            "callpush_broker_publishes_skipped",
            "Events stored but not published because the broker circuit was open (they are "
            "queued when the broker answers again), by queue.",
            ["queue"],
        ),
    )


def record_webhook(event_type: str | None, outcome: str) -> None:
    """One webhook answered.  ``event_type`` is None when the request was rejected before its
    type could be read (or trusted: only signed bodies are parsed)."""
    _metrics().webhooks.labels(type=(event_type or UNKNOWN)[:64], outcome=outcome).inc()


def record_push_answers(
    answers: Iterable[tuple[str, str, PushOutcome]], received_at: datetime
) -> None:
    """Provider answers (provider, platform, outcome) to pushes of an event received at
    ``received_at``; call it when the answers arrive, the latency ends now."""
    metrics = _metrics()
    latency = max(0.0, (utcnow() - received_at).total_seconds())
    for provider, platform, outcome in answers:
        metrics.pushes.labels(
            provider=provider, platform=platform, result=outcome.result.value
        ).inc()
        metrics.push_latency.observe(latency)


def record_tokens_disabled(reason: str, count: int) -> None:
    # Provider reason codes (Unregistered, BadDeviceToken, UNREGISTERED, ...) are a small closed
    # set; the cut only guards the label against a provider sending prose.
    _metrics().tokens_disabled.labels(reason=reason[:64] or UNKNOWN).inc(count)


def record_call_type_fetch(result: str) -> None:
    """One fetch of Stream's call-type push settings: "ok", "not_found" or "failed"."""
    _metrics().call_type_fetches.labels(result=result).inc()


def record_circuit_state(breaker: str, severity: int) -> None:
    """A circuit breaker changed state: 0 closed, 1 half-open, 2 open."""
    _metrics().circuit_state.labels(breaker=breaker).set(severity)


def record_publish_skipped(queue: str) -> None:
    _metrics().publishes_skipped.labels(queue=queue).inc()


def multiprocess_dir() -> str | None:
    """The shared directory when multiprocess mode is on (the rule prometheus_client uses)."""
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower())


def mark_process_dead(pid: int) -> None:
    """Tell the multiprocess files that ``pid`` exited (gunicorn ``child_exit``, Celery
    ``worker_process_shutdown``).  Only live gauges care; counters and histograms of a dead
    process keep counting in the totals, as they must."""
    path = multiprocess_dir()
    if path:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, path)


class QueueDepthCollector:
    """``callpush_queue_depth{queue}``: messages waiting in each Celery queue, read from Redis
    (``LLEN <queue>``, where kombu keeps a queue) at scrape time.  Nothing for the embedded
    in-memory broker or a non-Redis broker, and nothing (logged) when Redis does not answer:
    a scrape must never fail or hang because the broker is down."""

    def __init__(self, broker_url: str | None, queues: Sequence[str]) -> None:
        self._queues = tuple(queues)
        self._client = redis_client(broker_url) if broker_url else None

    def describe(self) -> Iterable[Metric]:
        # Registering must not talk to Redis (CollectorRegistry.register asks for the names).
        return []

    def collect(self) -> Iterable[Metric]:
        if self._client is None:
            return []
        from prometheus_client.core import GaugeMetricFamily

        try:
            with self._client.pipeline(transaction=False) as pipe:
                for queue in self._queues:
                    pipe.llen(queue)
                depths = pipe.execute()
        except Exception as error:  # redis raises its own errors and OSError subclasses
            log.warning("queue depth not collected: %s: %s", error.__class__.__name__, error)
            return []
        gauge = GaugeMetricFamily(
            "callpush_queue_depth", "Messages waiting in each Celery queue.", labels=["queue"]
        )
        for queue, depth in zip(self._queues, depths, strict=True):
            gauge.add_metric([queue], float(depth))
        return [gauge]


class BuildInfoCollector:
    """``callpush_build_info{version, python} 1``: which callpush (and Python) the scraped
    process runs, the usual Prometheus "info" gauge, so a rolling deploy shows its progress
    (``count by (version) (callpush_build_info)``).  A collector of the scrape's registry, not
    a multiprocess gauge: one sample per scrape, however many processes write the files."""

    def __init__(self) -> None:
        # Read once: the running code's version cannot change under it.
        self._labels = [callpush_version(), python_version()]

    def describe(self) -> Iterable[Metric]:
        return self.collect()

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        gauge = GaugeMetricFamily(
            "callpush_build_info",
            "The callpush version and Python version this process runs (always 1).",
            labels=["version", "python"],
        )
        gauge.add_metric(self._labels, 1.0)
        return [gauge]


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
        _metrics()  # defined, so a scrape names them before anything was counted
        # The default registry as one collector of this one (it has no describe(), so it is
        # registered without its names being collected).
        registry.register(REGISTRY)
    registry.register(QueueDepthCollector(broker_url, queues))
    registry.register(BuildInfoCollector())
    return registry

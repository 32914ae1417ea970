"""Prometheus metrics: defined once here, recorded where the facts happen (the webhook receiver,
:mod:`worker.delivery.push_outcomes`), exposed by the web app's ``/metrics`` and by
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

import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import redis

from worker.ops.version import callpush_version, python_version
from worker.push.base import PushOutcome, credentials_refused
from worker.storage.models import utcnow

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("callpush.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The classic text format, which is what generate_latest writes; every Prometheus reads it.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNKNOWN = "unknown"
# Set on every message callpush publishes (worker/runtime/tasks.py): the Unix time from which it is
# due
# (when it was queued, or when a retry's countdown ends), which the queue age is read from.
# Celery's messages carry no such time of their own.
READY_AT_HEADER = "callpush_ready_at"
# The answers of the webhook receiver, by what Stream should make of them: stored (accepted,
# duplicate, ignored, processed, failed), refused for good (rejected: 400, 401, 413, never
# retried), refused for now (unavailable: 503, Stream retries), or a bug (error: a 500).
WEBHOOK_REQUEST_OUTCOMES = (
    "accepted",
    "duplicate",
    "ignored",
    "processed",
    "failed",
    "rejected",
    "unavailable",
    "error",
)

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
# A webhook is answered within milliseconds (the insert, its commit and the publish); Stream gives
# each attempt 6 s (https://getstream.io/video/docs/api/webhooks/overview/).
WEBHOOK_REQUEST_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    6.0,
)
# From the webhook to the phone's receipt: the provider's delivery to the phone on top of the
# push latency, seconds for a phone awake, longer for one in Doze or just back online.
PHONE_LATENCY_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


@dataclass(frozen=True, slots=True)
class _Metrics:
    webhooks: Counter
    pushes: Counter
    push_latency: Histogram
    tokens_disabled: Counter
    call_type_fetches: Counter
    circuit_state: Gauge
    publishes_skipped: Counter
    webhook_requests: Histogram
    ring_pushes: Counter
    ring_push_latency: Histogram
    auth_failures: Counter
    push_receipts: Counter
    phone_latency: Histogram


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
        webhook_requests=Histogram(
            "callpush_webhook_request_seconds",
            "Time to answer POST /webhooks/stream, by outcome (accepted, duplicate, ignored, "
            "processed, failed, rejected: 4xx, unavailable: 503, error: 500).",
            ["outcome"],
            buckets=WEBHOOK_REQUEST_BUCKETS,
        ),
        ring_pushes=Counter(
            "callpush_ring_pushes",
            "Provider answers to call.ring pushes (a part of callpush_pushes_total), by "
            "provider, platform and result.",
            ["provider", "platform", "result"],
        ),
        ring_push_latency=Histogram(
            "callpush_ring_push_latency_seconds",
            "Time from a call.ring webhook's receipt to the provider's answer, per ring push.",
            buckets=LATENCY_BUCKETS,
        ),
        auth_failures=Counter(
            "callpush_push_auth_failures",
            "Pushes failed because the provider refused our credentials (an APNs key revoked or "
            "expired, FCM's service account refused), by provider and reason.",
            ["provider", "reason"],
        ),
        push_receipts=Counter(
            "callpush_push_receipts",
            "Pushes the phone confirmed receiving (POST /receipts, the first receipt of each), "
            "by platform and push kind (voip, alert, data).  Divided by "
            'callpush_pushes_total{result="sent"}: the receipt rate of the apps that send them.',
            ["platform", "kind"],
        ),
        phone_latency=Histogram(
            "callpush_phone_latency_seconds",
            "Time from the webhook's receipt to the phone's receipt of the push, by platform.",
            ["platform"],
            buckets=PHONE_LATENCY_BUCKETS,
        ),
    )


def record_webhook(event_type: str | None, outcome: str) -> None:
    """One webhook answered.  ``event_type`` is None when the request was rejected before its
    type could be read (or trusted: only signed bodies are parsed)."""
    _metrics().webhooks.labels(type=(event_type or UNKNOWN)[:64], outcome=outcome).inc()


def record_webhook_request(outcome: str, seconds: float) -> None:
    """One answer of POST /webhooks/stream and the time it took; ``outcome`` is one of
    :data:`WEBHOOK_REQUEST_OUTCOMES` (anything else counts as "error": the label stays bounded)."""
    label = outcome if outcome in WEBHOOK_REQUEST_OUTCOMES else "error"
    _metrics().webhook_requests.labels(outcome=label).observe(max(0.0, seconds))


def webhook_request_outcome(answer: str) -> str:
    """The request outcome of a ``callpush_webhooks_total`` outcome: a stored event's status
    as it is, an HTTP status by its class."""
    if answer == "503":
        return "unavailable"
    if answer.isdigit():
        return "rejected" if answer.startswith("4") else "error"
    return answer


def record_push_answers(
    answers: Iterable[tuple[str, str, PushOutcome]], received_at: datetime, *, ring: bool = False
) -> None:
    """Provider answers (provider, platform, outcome) to pushes of an event received at
    ``received_at``; call it when the answers arrive, the latency ends now.  ``ring``: the
    pushes of a call.ring, also counted on their own (the ring alerts watch them)."""
    metrics = _metrics()
    latency = max(0.0, (utcnow() - received_at).total_seconds())
    for provider, platform, outcome in answers:
        labels = {"provider": provider, "platform": platform, "result": outcome.result.value}
        metrics.pushes.labels(**labels).inc()
        metrics.push_latency.observe(latency)
        if ring:
            metrics.ring_pushes.labels(**labels).inc()
            metrics.ring_push_latency.observe(latency)
        if credentials_refused(outcome):
            # The reason is one of a closed set (worker/push/base.py), so the label is bounded.
            metrics.auth_failures.labels(provider=provider, reason=outcome.reason).inc()


def record_phone_receipt(platform: str, kind: str, latency_ms: float) -> None:
    """A phone's first receipt of a push (platform and kind as stored on the delivery: a
    closed set, so the labels stay bounded)."""
    metrics = _metrics()
    metrics.push_receipts.labels(platform=platform, kind=kind).inc()
    metrics.phone_latency.labels(platform=platform).observe(max(0.0, latency_ms / 1000))


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
    (``LLEN <queue>``, where kombu keeps a queue) at scrape time; and
    ``callpush_queue_oldest_message_age_seconds{queue}``: how long the message next in line
    has waited since it was due (0 for an empty queue), from the time callpush stamped on it
    when queuing it (kombu pushes at the list's head and workers pop its tail, so the tail is
    the oldest).
    On RabbitMQ only the depth, from a passive ``queue.declare`` on a short-lived connection
    (its ``message_count``: ready messages, not those a worker holds unacked); AMQP has no way
    to look at a queue's next message without taking it (worker/runtime/amqp_broker.py).
    Nothing for the embedded in-memory broker or another broker, and nothing (logged) when the
    broker does not answer: a scrape must never fail or hang because the broker is down."""

    def __init__(self, broker_url: str | None, queues: Sequence[str]) -> None:
        from worker.runtime.amqp_broker import is_amqp

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

        from worker.runtime.amqp_broker import queue_depths

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
        _metrics()  # defined, so a scrape names them before anything was counted
        # The default registry as one collector of this one (it has no describe(), so it is
        # registered without its names being collected).
        registry.register(REGISTRY)
    registry.register(QueueDepthCollector(broker_url, queues))
    registry.register(BuildInfoCollector())
    return registry

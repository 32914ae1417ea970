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

import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NamedTuple

from worker.foundation.version import callpush_version, python_version

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("callpush.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The classic text format, which is what generate_latest writes; every Prometheus reads it.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNKNOWN = "unknown"
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


def define_metrics() -> None:
    """Create the metrics now, so a scrape names them before anything was counted."""
    _metrics()


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


class PushAnswer(NamedTuple):
    """One provider answer, in the metrics' terms (labels are closed sets)."""

    provider: str
    platform: str
    result: str
    reason: str
    credentials_refused: bool


def record_push_answers(
    answers: Iterable[PushAnswer], received_at: datetime, *, ring: bool = False
) -> None:
    """Provider answers to pushes of an event received at ``received_at``; call it when the
    answers arrive, the latency ends now.  ``ring``: the pushes of a call.ring, also counted on
    their own (the ring alerts watch them)."""
    metrics = _metrics()
    latency = max(0.0, (datetime.now(UTC) - received_at).total_seconds())
    for answer in answers:
        labels = {"provider": answer.provider, "platform": answer.platform, "result": answer.result}
        metrics.pushes.labels(**labels).inc()
        metrics.push_latency.observe(latency)
        if ring:
            metrics.ring_pushes.labels(**labels).inc()
            metrics.ring_push_latency.observe(latency)
        if answer.credentials_refused:
            # The reason is one of a closed set (worker/push/base.py), so the label is bounded.
            metrics.auth_failures.labels(provider=answer.provider, reason=answer.reason).inc()


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

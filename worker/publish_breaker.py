"""Publishing inbox events to the broker through a circuit breaker.

A webhook is committed to the inbox before it is published, so a publish may fail or be skipped
without losing anything.  What must not happen is every webhook waiting on a broker that hangs:

- closed: each publish is tried, and waited for at most ``broker.publish_timeout_seconds`` (the
  broker connections' socket timeouts are as short); ``broker.breaker_failures`` failures in a
  row open it;
- open: nothing is tried, the event stays in the inbox (``callpush_broker_publishes_skipped``),
  the webhook is answered at once;
- every ``broker.breaker_reset_seconds`` a background probe opens a fresh broker connection (the
  half-open trial); when it answers, the circuit closes and the events stored since the failures
  began are queued at once, rings first (:func:`worker.inbox_sweeper.requeue_received_since`),
  instead of waiting for the sweeper's minute.

It wraps Celery's publish (``send_task``) and probes with kombu's connection, so it works for any
broker Celery supports.  One per process (the web app keeps it on its ``Receiver``); several
processes each drain, and a drained event queued twice is processed once (the inbox status and
the per-device delivery claims).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime, timedelta

from celery import Celery

from worker import metrics
from worker.circuit_breaker import CircuitBreaker, CircuitState
from worker.settings import BrokerSettings
from worker.storage.models import utcnow

log = logging.getLogger("callpush.broker")

# Events received this long before the first failed publish are drained too: a webhook is
# committed a moment before its publish starts, and clocks of web processes differ slightly.
DRAIN_MARGIN = timedelta(seconds=10)

# Publishes in flight at once per process: more than a gunicorn worker's request threads (8)
# rarely publish together, and a hung broker stops them all at the first deadline anyway.
PUBLISH_THREADS = 8

Publish = Callable[[], None]
Drain = Callable[[datetime], int]


class PublishBreaker:
    def __init__(
        self, celery: Celery, settings: BrokerSettings, drain: Drain | None = None
    ) -> None:
        self._celery = celery
        self._settings = settings
        self._drain = drain
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._prober: threading.Thread | None = None
        self._publishers: ThreadPoolExecutor | None = None
        self._outage_lock = threading.Lock()
        self._outage_since: datetime | None = None
        self._drain_pending = False
        self._closed = threading.Event()
        self.breaker = CircuitBreaker(
            "broker",
            failure_threshold=settings.breaker_failures,
            reset_seconds=settings.breaker_reset_seconds,
            on_state_change=self._state_changed,
        )

    @property
    def state(self) -> CircuitState:
        return self.breaker.state

    def publish(self, queue: str, send: Publish) -> bool:
        """Run ``send`` (one Celery publish) unless the circuit is open, waiting at most
        ``publish_timeout_seconds`` for it.  True when it was published; False when it was
        skipped, failed or is still waiting (the caller's event stays in the inbox for the
        drain or the sweeper).  Never raises for a broker failure.

        The publish runs on a small pool of this breaker's threads, so the caller's wait is
        bounded by that one number whatever kombu does inside (a reconnect attempt doubles its
        socket timeouts); a publish still running at the deadline counts as a failure at once,
        which opens the circuit for the webhooks behind it, and finishes in the background."""
        if self.breaker.state is not CircuitState.CLOSED:
            # Open or half-open: the background probe is the trial, webhooks never wait on it.
            metrics.record_publish_skipped(queue)
            return False
        started = utcnow()
        attempt = self._executor().submit(self._attempt, queue, send, started)
        try:
            return attempt.result(timeout=self._settings.publish_timeout_seconds)
        except FutureTimeout:
            self.breaker.record_failure(started)
            log.warning(
                "publish to %s got no answer within %g s; the event stays in the inbox",
                queue,
                self._settings.publish_timeout_seconds,
            )
            return False

    def _attempt(self, queue: str, send: Publish, started: datetime) -> bool:
        try:
            send()
        except Exception as error:
            self.breaker.record_failure(started)
            log.warning(
                "publish to %s failed (%s: %s); the event stays in the inbox",
                queue,
                type(error).__name__,
                error,
            )
            return False
        self.breaker.record_success()
        return True

    def _executor(self) -> ThreadPoolExecutor:
        # Built on first use, in the process that publishes (gunicorn forks before that).
        with self._lock:
            if self._publishers is None:
                self._publishers = ThreadPoolExecutor(
                    max_workers=PUBLISH_THREADS, thread_name_prefix="broker-publish"
                )
            return self._publishers

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        with self._lock:
            if self._publishers is not None:
                self._publishers.shutdown(wait=False, cancel_futures=True)

    # -- the probe ------------------------------------------------------------------------

    def _state_changed(self, breaker: CircuitBreaker, old: CircuitState, new: CircuitState) -> None:
        # Called under the breaker's lock: only note what happened and wake the prober.
        metrics.record_circuit_state("broker", new.severity)
        with self._outage_lock:  # never held by anyone calling into the breaker
            if new is CircuitState.OPEN and self._outage_since is None:
                self._outage_since = breaker.failing_since or utcnow()
            if new is CircuitState.CLOSED and old is not CircuitState.CLOSED:
                # Closed by the probe or by a slow publish that got through after all: either
                # way, what was skipped meanwhile is queued now.
                self._drain_pending = True
        if new is not CircuitState.HALF_OPEN:
            self._start_prober()
            self._wake.set()

    def _start_prober(self) -> None:
        with self._lock:  # never held by the prober, so no lock-order cycle
            if self._prober is None:
                self._prober = threading.Thread(
                    target=self._probe_loop, name="broker-probe", daemon=True
                )
                self._prober.start()

    def _probe_loop(self) -> None:
        """One thread per process, started at the first outage: asleep while the circuit is
        closed, a probe every ``breaker_reset_seconds`` while it is not, and the drain as soon
        as it closes."""
        while not self._closed.is_set():
            state = self.breaker.state
            idle = state is CircuitState.CLOSED and not self._drain_pending
            self._wake.wait(None if idle else self._settings.breaker_reset_seconds)
            self._wake.clear()
            if self._closed.is_set():
                return
            if self._drain_pending:
                self._drain_outage()
                continue
            if self.breaker.state is CircuitState.CLOSED or not self.breaker.allow():
                continue  # closed meanwhile, or still cooling down
            if self._probe():
                self.breaker.record_success()  # the listener asks for the drain
            else:
                self.breaker.record_failure()

    def _drain_outage(self) -> None:
        with self._outage_lock:
            since, self._outage_since = self._outage_since, None
            self._drain_pending = False
        self._drain_since(since)

    def _probe(self) -> bool:
        """One fresh connection and channel: a round trip on every transport (Redis answers
        a PING when kombu opens its channel), bounded by the transport's socket timeouts."""
        timeout = self._settings.publish_timeout_seconds
        try:
            with self._celery.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=timeout)
                connection.default_channel  # noqa: B018  (opening it is the round trip)
        except Exception as error:
            log.info("broker probe failed: %s: %s", type(error).__name__, error)
            return False
        return True

    def _drain_since(self, since: datetime | None) -> None:
        if self._drain is None:
            return
        start = (since or utcnow()) - DRAIN_MARGIN
        try:
            queued = self._drain(start)
        except Exception:
            # The sweeper is still there: nothing is lost, only later.
            log.exception("broker is back, but draining the inbox failed; left to the sweeper")
            return
        log.warning("broker is back: queued %d inbox events stored while it was down", queued)

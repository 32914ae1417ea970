"""Publishing inbox events to the broker through a circuit breaker.

A webhook is committed to the inbox before it is published, so a publish may fail or be skipped
without losing anything.  What must not happen is every webhook waiting on a broker that hangs:

- closed: each publish is tried, and waited for at most ``broker.publish_timeout_seconds`` (the
  broker connections' socket timeouts are as short); ``broker.breaker_failures`` failures in a
  row open the circuit;
- open: nothing is tried, the event stays in the inbox (``callpush_broker_publishes_skipped``),
  the webhook is answered at once;
- every ``broker.breaker_reset_seconds`` a background probe opens a fresh broker connection (the
  half-open trial).  When the circuit closes again (the probe answered, or a slow publish got
  through after all), the events this process did not publish are queued at once, rings first
  (:func:`worker.runtime.inbox_sweeper.requeue_unpublished`), instead of waiting for the sweeper's
  minute.

The process remembers which events it did not publish (up to :data:`MAX_REMEMBERED`; beyond
that the sweeper queues the rest), so the drain queues exactly those, and only the ones no
worker has started meanwhile: nothing is queued twice by it, and each web process drains its own.

It wraps Celery's publish (``send_task``) and probes with kombu's connection, so it works for any
broker Celery supports.  One per process: the web app keeps it on its ``Receiver``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from celery import Celery

from worker.foundation import metrics
from worker.foundation.circuit_breaker import CircuitBreaker, CircuitState
from worker.foundation.settings import BrokerSettings

log = logging.getLogger("callpush.broker")

# Publishes waited for at once per process: as many as a gunicorn worker's request threads (8
# by default), each of which publishes one event at a time.
PUBLISH_THREADS = 8
# Events not published that one process remembers for the drain (an id and a type each).
MAX_REMEMBERED = 100_000

Publish = Callable[[], None]
# (event id, event type) of an inbox event.
Event = tuple[int, str]
# Queues the events (id -> type) and returns how many it queued.
Drain = Callable[[Mapping[int, str]], int]


class PublishBreaker:
    def __init__(
        self, celery: Celery, settings: BrokerSettings, drain: Drain | None = None
    ) -> None:
        self._celery = celery
        self._settings = settings
        self._drain = drain
        self._wake = threading.Event()
        self._lock = threading.Lock()  # the prober and executor slots; never held by them
        self._prober: threading.Thread | None = None
        self._publishers: ThreadPoolExecutor | None = None
        self._unpublished_lock = threading.Lock()
        self._unpublished: dict[int, str] = {}
        self._forgotten = 0  # events not remembered (over MAX_REMEMBERED) in this outage
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

    def unpublished(self) -> dict[int, str]:
        """The events this process stored but did not publish (id -> type), for the drain."""
        with self._unpublished_lock:
            return dict(self._unpublished)

    def publish(self, queue: str, send: Publish, event: Event | None = None) -> bool:
        """Run ``send`` (one Celery publish) unless the circuit is open, waiting at most
        ``publish_timeout_seconds`` for it.  True when it was published; False when it was
        skipped, failed or is still waiting: ``event`` is then remembered for the drain (and
        the sweeper has it anyway).  Never raises for a broker failure.

        The publish runs on a small pool of this breaker's threads, so the caller's wait is
        bounded by that one number whatever kombu does inside (a reconnect attempt doubles its
        socket timeouts); a publish still running at the deadline counts as a failure at once,
        which opens the circuit for the webhooks behind it, and finishes in the background."""
        if self.breaker.state is not CircuitState.CLOSED:
            # Open or half-open: the background probe is the trial, webhooks never wait on it.
            metrics.record_publish_skipped(queue)
            self._remember(event)
            return False
        attempt = self._executor().submit(self._attempt, queue, send, event)
        try:
            return attempt.result(timeout=self._settings.publish_timeout_seconds)
        except FutureTimeout:
            self._remember(event)  # forgotten again if the attempt gets through after all
            self.breaker.record_failure()
            log.warning(
                "publish to %s got no answer within %g s; the event stays in the inbox",
                queue,
                self._settings.publish_timeout_seconds,
            )
            return False

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        with self._lock:
            if self._publishers is not None:
                self._publishers.shutdown(wait=False, cancel_futures=True)

    def _attempt(self, queue: str, send: Publish, event: Event | None) -> bool:
        try:
            send()
        except Exception as error:
            self._remember(event)
            self.breaker.record_failure()
            log.warning(
                "publish to %s failed (%s: %s); the event stays in the inbox",
                queue,
                type(error).__name__,
                error,
            )
            return False
        if event is not None:
            with self._unpublished_lock:
                self._unpublished.pop(event[0], None)
        self.breaker.record_success()
        return True

    def _remember(self, event: Event | None) -> None:
        if event is None:
            return
        with self._unpublished_lock:
            if len(self._unpublished) < MAX_REMEMBERED:
                self._unpublished[event[0]] = event[1]
                return
            self._forgotten += 1
            first = self._forgotten == 1
        if first:
            log.warning(
                "more than %d events not published; the sweeper will queue the rest",
                MAX_REMEMBERED,
            )

    def _executor(self) -> ThreadPoolExecutor:
        # Built on first use, in the process that publishes (gunicorn forks before that).
        with self._lock:
            if self._publishers is None:
                self._publishers = ThreadPoolExecutor(
                    max_workers=PUBLISH_THREADS, thread_name_prefix="broker-publish"
                )
            return self._publishers

    # -- the probe and the drain ----------------------------------------------------------

    def _state_changed(
        self, _breaker: CircuitBreaker, old: CircuitState, new: CircuitState
    ) -> None:
        # Called under the breaker's lock: only note what happened and wake the prober.
        metrics.record_circuit_state("broker", new.severity)
        if new is CircuitState.HALF_OPEN:
            return
        if new is CircuitState.CLOSED and old is not CircuitState.CLOSED:
            # Closed by the probe or by a slow publish that got through after all: either way,
            # what was skipped meanwhile is queued now.
            self._drain_pending = True
        with self._lock:
            if self._prober is None:
                self._prober = threading.Thread(
                    target=self._probe_loop, name="broker-probe", daemon=True
                )
                self._prober.start()
        self._wake.set()

    def _probe_loop(self) -> None:
        """One thread per process, started at the first outage: asleep while the circuit is
        closed, a probe every ``breaker_reset_seconds`` while it is not, and the drain as soon
        as it closes."""
        while not self._closed.is_set():
            idle = self.breaker.state is CircuitState.CLOSED and not self._drain_pending
            self._wake.wait(None if idle else self._settings.breaker_reset_seconds)
            self._wake.clear()
            if self._closed.is_set():
                return
            if self._drain_pending:
                self._drain_pending = False
                self._drain_unpublished()
                continue
            if self.breaker.state is CircuitState.CLOSED or not self.breaker.allow():
                continue  # closed meanwhile, or still cooling down
            if self._probe():
                self.breaker.record_success()  # the listener asks for the drain
            else:
                self.breaker.record_failure()

    def _probe(self) -> bool:
        """One fresh connection and channel: a round trip on every transport (Redis answers
        a PING when kombu opens its channel), bounded by the transport's socket timeouts."""
        timeout = self._settings.publish_timeout_seconds
        try:
            with self._celery.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=timeout)  # type: ignore[arg-type]  # celery-types says int; kombu takes seconds as a float
                connection.default_channel  # noqa: B018  (opening it is the round trip)
        except Exception as error:
            log.info("broker probe failed: %s: %s", type(error).__name__, error)
            return False
        return True

    def _drain_unpublished(self) -> None:
        """Queue what this process did not publish.  Each event is published through
        :meth:`publish` again, so one that fails (the broker gone again) is remembered again."""
        with self._unpublished_lock:
            events, self._unpublished = self._unpublished, {}
            forgotten, self._forgotten = self._forgotten, 0
        if self._drain is None or not events:
            return
        try:
            queued = self._drain(events)
        except Exception:
            with self._unpublished_lock:
                self._unpublished = {**events, **self._unpublished}
            # The sweeper is still there: nothing is lost, only later.
            log.exception("broker is back, but draining the inbox failed; left to the sweeper")
            return
        log.warning(
            "broker is back: queued %d of the %d events not published while it was down%s",
            queued,
            len(events),
            f" ({forgotten} more are left to the sweeper)" if forgotten else "",
        )

"""Celery app factory: two queues so a big fan-out never delays a ring.

``ring`` is latency-critical and served by its own workers (prefetch 1); ``bulk`` takes
everything else.  Tasks are acked late and re-queued when a worker dies, so they run at least
once; the delivery records make that exactly one push per device.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from celery import Celery, Task
from celery.signals import (
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)
from kombu import Exchange, Queue

from worker.delivery.services import Services, build_services
from worker.foundation.logging_setup import bind_log_context
from worker.foundation.metrics import mark_process_dead
from worker.foundation.settings import Settings
from worker.runtime import amqp_broker, broker_transport, tasks
from worker.runtime.tasks import BULK_QUEUE, RING_QUEUE, CeleryHandoff

EMBEDDED_BROKER = "memory://localhost/"  # a host, or kombu warns on every connection


class ProcessLocalServices:
    """Lazily builds :class:`Services` once per process id."""

    def __init__(self, factory: Callable[[], Services]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._services: Services | None = None

    def get(self) -> Services:
        pid = os.getpid()
        if self._services is None or self._pid != pid:
            with self._lock:
                if self._services is None or self._pid != pid:
                    self._services = self._factory()
                    self._pid = pid
        return self._services

    def built(self) -> Services | None:
        """This process's services if they were built, without building them."""
        with self._lock:
            return self._services if self._pid == os.getpid() else None

    def close(self) -> None:
        with self._lock:
            if self._services is not None and self._pid == os.getpid():
                self._services.close()
            self._services = None


class CallpushCelery(Celery):
    """The callpush Celery app: it carries its settings, its hand-off port and this process's
    services (built on first use in each process, after any fork), so a task reaches them
    through ``self.app`` (Warehouse's and Indico's pattern), never through a module global."""

    def __init__(self, settings: Settings, broker: str) -> None:
        super().__init__("callpush", broker=broker, set_as_current=False)
        self.settings = settings
        self.handoff = CeleryHandoff(self)
        self._services = ProcessLocalServices(lambda: build_services(settings, self.handoff))

    @property
    def services(self) -> Services:
        """This process's services (built now if they were not)."""
        return self._services.get()

    def built_services(self) -> Services | None:
        """This process's services if they were built, without building them."""
        return self._services.built()

    def close_services(self) -> None:
        self._services.close()


def create_celery(settings: Settings, *, publisher: bool = False) -> CallpushCelery:
    """``publisher=True`` for a process that only publishes (the web receiver): every broker
    operation gets the short ``broker.publish_timeout_seconds``.  A worker's connections keep
    longer ones: its consumer blocks in BRPOP for up to a second (kombu's ``brpop_timeout``),
    which a shorter socket timeout would cut."""
    broker = settings.broker_url or EMBEDDED_BROKER
    app = CallpushCelery(settings, broker)
    transport_options: dict[str, Any] = {}
    queues = [Queue(q, Exchange(q, type="direct"), routing_key=q) for q in (RING_QUEUE, BULK_QUEUE)]
    amqp_config: dict[str, Any] = {}
    if broker.startswith("redis"):
        # A message not acked within this time is delivered again (a worker lost mid-task).
        # It must exceed the longest countdown a bulk retry may use.
        timeout = settings.broker.publish_timeout_seconds
        transport_options = {
            "visibility_timeout": 3600,
            "socket_connect_timeout": timeout if publisher else 2,
            "socket_timeout": timeout if publisher else 5,
        }
        if broker.startswith("redis://"):
            # kombu's Redis transport with the reconnect race fixed
            # (worker/runtime/broker_transport.py).
            app.conf.broker_transport = broker_transport.TRANSPORT
    elif amqp_broker.is_amqp(broker):
        # RabbitMQ: quorum queues, publisher confirms, bounded sockets
        # (worker/runtime/amqp_broker.py).
        queues = amqp_broker.queues((RING_QUEUE, BULK_QUEUE))
        amqp_config = amqp_broker.celery_config(
            settings.broker.publish_timeout_seconds, publisher=publisher
        )
        transport_options = amqp_config.pop("broker_transport_options")
    elif broker == EMBEDDED_BROKER:
        # The in-memory transport polls; the default 1 s would add up to 1 s to every ring.
        transport_options = {"polling_interval": 0.002}
    app.conf.update(
        # Each queue with its own exchange and key, so a message lands in exactly one queue.
        task_queues=queues,
        task_default_queue=BULK_QUEUE,
        task_default_exchange=BULK_QUEUE,
        task_default_routing_key=BULK_QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport_options,
        # The receiver must not hang when the broker is down: the inbox already holds the
        # event, and the drain (worker/intake/publish_breaker.py) or the sweeper enqueues it later
        # (README: guarantees).  One retry, on a fresh connection: a pooled one may have died
        # with a Redis restart.
        task_publish_retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2},
        worker_hijack_root_logger=False,
        # Task events for `celery events` / Flower, when asked for (settings.celery).
        worker_send_task_events=settings.celery.task_events,
        task_send_sent_event=settings.celery.task_events,
        enable_utc=True,
        beat_schedule={
            "sweep-inbox": {
                "task": "callpush.sweep_inbox",
                "schedule": settings.sweeper.interval_seconds,
            },
            "purge-old-events": {
                "task": "callpush.purge_old_events",
                "schedule": settings.retention.interval_seconds,
            },
        },
        **amqp_config,
    )
    tasks.register(app)

    def _init(**_: Any) -> None:
        app.services  # noqa: B018 - built now, in the child, not at its first task

    def _close(**_: Any) -> None:
        app.close_services()
        mark_process_dead(os.getpid())

    def _init_in_this_process(sender: Any = None, **_: Any) -> None:
        # A threads (or solo) pool runs the tasks in the worker's own process: build the
        # services as it starts, not at its first task, so that Stream's call-type push
        # settings are being fetched before the first ring.  A prefork parent builds nothing.
        if getattr(sender, "app", None) is app and _runs_tasks_in_process(sender):
            app.services  # noqa: B018

    def _stop_in_this_process(sender: Any = None, **_: Any) -> None:
        # The same pools, as the worker stops: no more refreshes from a stopped worker.
        built = app.built_services()
        if getattr(sender, "app", None) is app and built is not None:
            built.stop_background_work()

    # Prefork: build the APNs client and DB pool in each child, after the fork.
    worker_process_init.connect(_init, weak=False)
    worker_init.connect(_init_in_this_process, weak=False)
    worker_shutdown.connect(_stop_in_this_process, weak=False)
    worker_process_shutdown.connect(_close, weak=False)
    # Process-wide signals: connected once however many apps the process creates.
    task_prerun.connect(_bind_task_log_context, weak=False, dispatch_uid="callpush.log_context")
    task_postrun.connect(_clear_task_log_context, weak=False, dispatch_uid="callpush.log_context")
    return app


def _runs_tasks_in_process(controller: Any) -> bool:
    from celery.concurrency import get_implementation
    from celery.concurrency.prefork import TaskPool as PreforkPool

    pool = get_implementation(getattr(controller, "pool_cls", None) or "prefork")
    return isinstance(pool, type) and not issubclass(pool, PreforkPool)


def _bind_task_log_context(task: Task | None = None, args: Any = None, **_: Any) -> None:
    """Every log line of an event's task carries its event id (the first argument of the
    event and chunk tasks); the call cid is bound by the processing code once it is loaded.
    Both are set, never inherited: a pool thread keeps its context from one task to the next."""
    event_id = args[0] if task is not None and task.name in tasks.EVENT_TASKS and args else None
    bind_log_context(event_id=event_id if isinstance(event_id, int) else None, call_cid=None)


def _clear_task_log_context(**_: Any) -> None:
    bind_log_context(event_id=None, call_cid=None)

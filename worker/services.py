"""What the domain needs at run time, built once per process (after a fork, never before: the
APNs client, HTTP sessions and database pools must not cross a fork)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from worker.device_sources import DeviceSource, LocalRegistry, StreamDevices
from worker.push.providers import build_providers
from worker.push.sender import PushSender
from worker.settings import Settings
from worker.storage.database import Database
from worker.storage.models import utcnow
from worker.stream_api import StreamApi
from worker.templates import TemplateBook

EnqueueChunk = Callable[[int, int], None]


def _no_queue(event_id: int, chunk_index: int) -> None:
    raise RuntimeError("no task queue configured for fan-out chunks")


@dataclass
class Services:
    settings: Settings
    db: Database
    sender: PushSender
    templates: TemplateBook
    # Queues one fan-out chunk (event id, chunk index) for a bulk worker.
    enqueue_chunk: EnqueueChunk = _no_queue
    now: Callable[[], datetime] = field(default=utcnow)
    # How the domain waits (a ring's retry backoff): replaced with a fake clock in tests.
    sleep: Callable[[float], None] = field(default=time.sleep)
    _apis: dict[str, StreamApi] = field(default_factory=dict)
    _device_sources: dict[str, DeviceSource] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def stream_api(self, api_key: str) -> StreamApi | None:
        """Stream's REST API for the app that sent the event (several apps may be served)."""
        app = self.settings.app_for_key(api_key)
        if app is None:
            return None
        with self._lock:
            if api_key not in self._apis:
                self._apis[api_key] = StreamApi(app, self.settings.stream_api_timeout_seconds)
            return self._apis[api_key]

    def device_source(self, api_key: str) -> DeviceSource:
        """Where the app's devices come from (``devices.source``: local registry or Stream)."""
        key = "local" if self.settings.devices.source == "local" else api_key
        with self._lock:
            source = self._device_sources.get(key)
        if source is None:
            api = self.stream_api(api_key) if key != "local" else None
            if api is None:
                source = LocalRegistry()
            else:
                source = StreamDevices(api, self.settings.devices.cache_seconds)
            with self._lock:
                source = self._device_sources.setdefault(key, source)
        return source

    def claim_lease(self) -> timedelta:
        """A SENDING claim older than this belongs to a worker that died mid-send: a live one
        has its provider's answer (or timeout) well within it."""
        longest = max(self.settings.apns.timeout_seconds, self.settings.fcm.timeout_seconds)
        return timedelta(seconds=longest + 3)

    def close(self) -> None:
        self.sender.close()
        for source in self._device_sources.values():
            source.close()
        for api in self._apis.values():
            api.close()
        self.db.dispose()


def build_services(settings: Settings, enqueue_chunk: EnqueueChunk = _no_queue) -> Services:
    return Services(
        settings=settings,
        db=Database(settings.database_url, durable_commits=False),
        sender=PushSender(build_providers(settings)),
        templates=TemplateBook.from_settings(settings),
        enqueue_chunk=enqueue_chunk,
    )


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

    def close(self) -> None:
        with self._lock:
            if self._services is not None and self._pid == os.getpid():
                self._services.close()
            self._services = None

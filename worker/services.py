"""What the domain needs at run time, built once per process (after a fork, never before: the
APNs client and database pools must not cross a fork)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from worker.push.providers import build_providers
from worker.push.sender import PushSender
from worker.settings import Settings
from worker.storage.database import Database
from worker.storage.models import utcnow


@dataclass
class Services:
    settings: Settings
    db: Database
    sender: PushSender
    now: Callable[[], datetime] = field(default=utcnow)

    def close(self) -> None:
        self.sender.close()
        self.db.dispose()


def build_services(settings: Settings) -> Services:
    return Services(
        settings=settings,
        db=Database(settings.database_url),
        sender=PushSender(build_providers(settings)),
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

"""The hand-off port done inline, for commands run beside the embedded mode.

Without a broker (`callpush run`'s queue lives in that process's memory) a command such as
`callpush events replay` has no worker to hand events to, so it runs the normal processing path
itself: :func:`worker.delivery.event_processing.process_event`, and a fan-out's chunks one
after the other, waiting out each :class:`~worker.foundation.handoff.RetryLater` as a bulk
worker would.
"""

from __future__ import annotations

import time
from types import TracebackType

from worker.delivery.event_processing import process_event
from worker.delivery.notifications import deliver_chunk
from worker.delivery.services import Services, build_services
from worker.foundation.handoff import RetryLater
from worker.foundation.settings import Settings


class InlineHandoff:
    """Each queued piece of work is done before the call returns."""

    def __init__(self, settings: Settings) -> None:
        self.services: Services = build_services(settings, self)
        # Events replayed at once would otherwise miss Stream's push settings still being read.
        self.services.wait_for_background_work(settings.stream_api_timeout_seconds + 1)

    def queue_event(self, event_id: int, event_type: str = "") -> None:
        while True:
            try:
                process_event(self.services, event_id)
                return
            except RetryLater as later:  # the domain bounds the attempts and picks the delay
                time.sleep(later.delay)

    def queue_replay(self, event_id: int) -> None:
        self.queue_event(event_id)

    def queue_chunk(self, event_id: int, chunk_index: int) -> None:
        attempt = 0
        while True:
            try:
                deliver_chunk(self.services, event_id, chunk_index, attempt)
                return
            except RetryLater as later:  # the domain bounds the attempts
                time.sleep(later.delay)
                attempt += 1

    def close(self) -> None:
        self.services.close()

    def __enter__(self) -> InlineHandoff:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

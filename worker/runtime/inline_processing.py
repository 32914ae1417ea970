"""Processing events in the calling process, for commands run in the embedded mode.

Without a broker (`callpush run`'s queue lives in that process's memory) a command such as
`callpush events replay` has no worker to hand events to, so it runs the normal processing path
itself: :func:`worker.delivery.event_processing.process_event`, and a fan-out's chunks one after
the other
with the same retries and backoff a bulk worker would apply.
"""

from __future__ import annotations

import time
from types import TracebackType

from worker.delivery.event_processing import process_event
from worker.delivery.notifications import RetryLater, deliver_chunk
from worker.runtime.services import Services, build_services
from worker.runtime.settings import Settings


class InlineProcessor:
    def __init__(self, settings: Settings) -> None:
        self.services: Services = build_services(settings, enqueue_chunk=self._deliver_chunk)
        # Events replayed at once would otherwise miss Stream's push settings still being read.
        self.services.wait_for_background_work(settings.stream_api_timeout_seconds + 1)

    def process(self, event_id: int) -> str:
        while True:
            try:
                return process_event(self.services, event_id)
            except RetryLater as later:  # the domain bounds the attempts and picks the delay
                time.sleep(later.delay)

    def _deliver_chunk(self, event_id: int, chunk_index: int) -> None:
        attempt = 0
        while True:
            run = deliver_chunk(self.services, event_id, chunk_index, attempt)
            if run.retry_in is None:  # the domain bounds the attempts
                return
            time.sleep(run.retry_in)
            attempt += 1

    def close(self) -> None:
        self.services.close()

    def __enter__(self) -> InlineProcessor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

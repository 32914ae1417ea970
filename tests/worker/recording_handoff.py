"""A hand-off port (worker/foundation/handoff.py) that records what the domain queued, for
domain tests run without Celery; ``on_chunk`` and ``on_replay`` run the queued work at once."""

from __future__ import annotations

from collections.abc import Callable


class RecordingHandoff:
    def __init__(
        self,
        chunks: list[tuple[int, int]] | None = None,
        on_chunk: Callable[[int, int], None] | None = None,
        on_replay: Callable[[int], object] | None = None,
    ) -> None:
        self.events: list[tuple[int, str]] = []
        self.chunks = chunks if chunks is not None else []
        self.replays: list[int] = []
        self._on_chunk = on_chunk
        self._on_replay = on_replay

    def queue_event(self, event_id: int, event_type: str) -> None:
        self.events.append((event_id, event_type))

    def queue_chunk(self, event_id: int, chunk_index: int) -> None:
        self.chunks.append((event_id, chunk_index))
        if self._on_chunk is not None:
            self._on_chunk(event_id, chunk_index)

    def queue_replay(self, event_id: int) -> None:
        self.replays.append(event_id)
        if self._on_replay is not None:
            self._on_replay(event_id)

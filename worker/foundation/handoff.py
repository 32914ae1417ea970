"""Handing work on: the one port through which the domain queues work for later, and the one
signal by which a piece of work asks to be run again later.

Two implementations (worker/runtime/): the Celery one publishes a task (rings on the ring
queue, the rest and every replay on bulk), and the inline one, for commands run beside the
embedded mode, does the work in the calling process.  The domain sees only this port, so it
never knows which one it has.
"""

from __future__ import annotations

from typing import Protocol


class RetryLater(Exception):
    """The work hit a transient failure (Stream's API down, a provider's 5xx): run it again
    after ``delay`` seconds.  The domain decides both whether to retry (it bounds the attempts)
    and the delay; whoever runs the work only waits and runs it again."""

    def __init__(self, delay: float, reason: str) -> None:
        super().__init__(reason)
        self.delay = delay
        self.reason = reason

    def __reduce__(self) -> tuple[object, ...]:
        # Picklable with its arguments (a prefork pool sends exceptions between processes).
        return (RetryLater, (self.delay, self.reason))


class Handoff(Protocol):
    """Where work goes once it is stored: each call returns once the work is queued (or done)
    and raises when it could not be (the broker is down); the stored row stays for the
    sweeper either way."""

    def queue_event(self, event_id: int, event_type: str) -> None:
        """A stored webhook, to be processed."""

    def queue_chunk(self, event_id: int, chunk_index: int) -> None:
        """One stored chunk of a fan-out's recipients, to be sent."""

    def queue_replay(self, event_id: int) -> None:
        """A reopened event, to be processed again (never ahead of live rings)."""


class NoHandoff:
    """For services that never hand work on (a test of one domain function, a read command)."""

    def queue_event(self, event_id: int, event_type: str) -> None:
        raise RuntimeError("no task queue configured")

    def queue_chunk(self, event_id: int, chunk_index: int) -> None:
        raise RuntimeError("no task queue configured for fan-out chunks")

    def queue_replay(self, event_id: int) -> None:
        raise RuntimeError("no task queue configured")

"""Recording what the providers answered: the delivery rows, and pruning dead tokens (Zulip's
push_notifications.py does the same: a token the provider calls invalid is never used again).

:class:`OutcomeRecorder` records a fan-out's answers while it is still sending, so that a worker
killed mid-send leaves unrecorded (and re-sent by whoever takes its claims over) only the pushes
still in flight, not everything it had sent since the last batch ended (README: guarantees).
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from types import TracebackType

from worker.foundation import metrics
from worker.push.base import (
    AnswerCallback,
    Platform,
    PushOutcome,
    PushResult,
    credentials_refused,
)
from worker.storage import deliveries, devices
from worker.storage.database import Database
from worker.storage.deliveries import Claim

log = logging.getLogger("callpush.push")


def record_push_outcomes(
    db: Database,
    event_id: int,
    received_at: datetime,
    claims: Sequence[Claim],
    outcomes: Sequence[PushOutcome],
    *,
    provider_of: Callable[[Platform], str] | None = None,
    log_counts: bool = True,
    ring: bool = False,
) -> Counter[str]:
    """Store each outcome on its claim, disable invalid tokens; return counts by status.
    ``ring``: these are a call.ring's pushes (counted in the ring metrics too).

    The metrics' provider label is the kind of the claim's provider (its label's first part);
    for a claim without a label, ``provider_of`` names the platform's provider
    (``services.sender.provider_name``), else the name is inferred from the outcome."""
    pairs = list(zip(claims, outcomes, strict=True))
    # Counted before the database write: the provider answered (the push went out, or not)
    # whether or not recording it succeeds.
    metrics.record_push_answers(
        (push_answer(_provider(c, o, provider_of), c.device.platform.value, o) for c, o in pairs),
        received_at,
        ring=ring,
    )
    with db.transaction() as session:
        deliveries.record_outcomes(session, pairs, received_at)
        dead: dict[str, list[int]] = {}
        for claim, outcome in pairs:
            if outcome.result is PushResult.TOKEN_INVALID:
                reason = outcome.reason or "invalid token"
                dead.setdefault(reason, []).append(claim.device.device_id)
        for reason, ids in dead.items():
            devices.disable_devices(session, ids, f"{reason} (event {event_id})")
    # After the commit, so only tokens really disabled count.  (One that another worker disabled
    # a moment earlier counts twice: rare, and the devices table remains the record.)
    for reason, ids in dead.items():
        metrics.record_tokens_disabled(reason, len(ids))
    counts = Counter(deliveries.RESULT_STATUS[o.result] for o in outcomes)
    if log_counts:
        _log_counts(event_id, counts)
    return counts


class OutcomeRecorder:
    """Records answers on a thread of its own as they arrive, a group commit at a time: while
    one transaction is being written the next answers queue up and go into the next one.

    Use as a context manager around the sends; leaving it waits until everything handed to
    :meth:`add` is committed, and raises what recording raised (the claims then stay unsettled
    and are taken over once their lease runs out)."""

    def __init__(
        self,
        db: Database,
        event_id: int,
        received_at: datetime,
        *,
        provider_of: Callable[[Platform], str] | None = None,
    ) -> None:
        self._db = db
        self._event_id = event_id
        self._received_at = received_at
        self._provider_of = provider_of
        self._queue: queue.SimpleQueue[tuple[Claim, PushOutcome] | None] = queue.SimpleQueue()
        # In a copy of the sender's context, so its log lines carry the event id and call cid.
        self._thread = threading.Thread(
            target=contextvars.copy_context().run,
            args=(self._run,),
            name="callpush-record",
            daemon=True,
        )
        self.counts: Counter[str] = Counter()
        self.error: BaseException | None = None

    def __enter__(self) -> OutcomeRecorder:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._queue.put(None)
        self._thread.join()
        _log_counts(self._event_id, self.counts)
        if self.error is not None and exc is None:
            raise self.error

    def add(self, claim: Claim, outcome: PushOutcome) -> None:
        """Queue one answer; called from the providers' threads, never blocks."""
        self._queue.put((claim, outcome))

    def answers_for(self, claims: Sequence[Claim]) -> AnswerCallback:
        """The ``on_answer`` of a send of one message per claim, in order."""
        return lambda index, outcome: self.add(claims[index], outcome)

    def raise_if_failed(self) -> None:
        """Stop sending more once answers can no longer be recorded."""
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        closing = False
        while not closing:
            pending = [self._queue.get()]
            while True:  # everything that arrived meanwhile goes into the same transaction
                try:
                    pending.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            closing = None in pending
            pairs = [item for item in pending if item is not None]
            if pairs and self.error is None:
                try:
                    self.counts += record_push_outcomes(
                        self._db,
                        self._event_id,
                        self._received_at,
                        [claim for claim, _ in pairs],
                        [outcome for _, outcome in pairs],
                        provider_of=self._provider_of,
                        log_counts=False,
                    )
                except Exception as error:  # raised to the sender by __exit__/raise_if_failed
                    log.warning("event %s: recording answers failed: %s", self._event_id, error)
                    self.error = error


def _log_counts(event_id: int, counts: Counter[str]) -> None:
    if counts:
        log.info(
            "event %s: %s",
            event_id,
            ", ".join(f"{n} {status}" for status, n in sorted(counts.items())),
        )


def push_answer(provider: str, platform: str, outcome: PushOutcome) -> metrics.PushAnswer:
    """A provider's answer as the metrics count it: closed-set labels, no token."""
    return metrics.PushAnswer(
        provider, platform, outcome.result.value, outcome.reason, credentials_refused(outcome)
    )


def _provider(
    claim: Claim, outcome: PushOutcome, provider_of: Callable[[Platform], str] | None
) -> str:
    # The metric's label is the provider's kind ("apns", "fcm", "console"), never an app's
    # provider name: bounded by construction, whatever the apps configure.
    if claim.provider:
        return claim.provider.partition(":")[0]
    platform = claim.device.platform
    if provider_of is not None:
        return provider_of(platform)
    # The console provider answers every push with reason "console"; the real providers are
    # named after their platform ("apns", "fcm").
    return "console" if outcome.reason == "console" else platform.value

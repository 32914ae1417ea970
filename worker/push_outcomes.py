"""Recording what the providers answered: the delivery rows, and pruning dead tokens (Zulip's
push_notifications.py does the same: a token the provider calls invalid is never used again)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime

from worker import metrics
from worker.push.base import Platform, PushOutcome, PushResult
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
) -> Counter[str]:
    """Store each outcome on its claim, disable invalid tokens; return counts by status.

    ``provider_of`` names the provider that sent to a platform (``services.sender.provider_name``)
    for the metrics; without it the name is inferred from the outcome."""
    pairs = list(zip(claims, outcomes, strict=True))
    # Counted before the database write: the provider answered (the push went out, or not)
    # whether or not recording it succeeds.
    metrics.record_push_answers(
        (
            (_provider(c.device.platform, o, provider_of), c.device.platform.value, o)
            for c, o in pairs
        ),
        received_at,
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
    if outcomes:
        log.info(
            "event %s: %s",
            event_id,
            ", ".join(f"{n} {status}" for status, n in sorted(counts.items())),
        )
    return counts


def _provider(
    platform: Platform, outcome: PushOutcome, provider_of: Callable[[Platform], str] | None
) -> str:
    if provider_of is not None:
        return provider_of(platform)
    # The console provider answers every push with reason "console"; the real providers are
    # named after their platform ("apns", "fcm").
    return "console" if outcome.reason == "console" else platform.value

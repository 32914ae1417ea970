"""Recording what the providers answered: the delivery rows, and pruning dead tokens (Zulip's
push_notifications.py does the same: a token the provider calls invalid is never used again)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from worker.push.base import PushOutcome, PushResult
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
) -> Counter[str]:
    """Store each outcome on its claim, disable invalid tokens; return counts by status."""
    pairs = list(zip(claims, outcomes, strict=True))
    with db.transaction() as session:
        deliveries.record_outcomes(session, pairs, received_at)
        dead: dict[str, list[int]] = {}
        for claim, outcome in pairs:
            if outcome.result is PushResult.TOKEN_INVALID:
                reason = outcome.reason or "invalid token"
                dead.setdefault(reason, []).append(claim.device.device_id)
        for reason, ids in dead.items():
            devices.disable_devices(session, ids, f"{reason} (event {event_id})")
    counts = Counter(deliveries.RESULT_STATUS[o.result] for o in outcomes)
    if outcomes:
        log.info(
            "event %s: %s",
            event_id,
            ", ".join(f"{n} {status}" for status, n in sorted(counts.items())),
        )
    return counts

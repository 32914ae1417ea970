"""How old a push event was when it arrived.

Stream signs no timestamp, so a captured webhook verifies forever; and a `call.missed` that
reaches a phone days late is worse than none.  A push event that Stream created more than
``intake.max_event_age_seconds`` before it arrived is therefore stored as ignored and never
pushed, unless an operator insists (``--allow-stale`` on `callpush events import` / `replay`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

ALLOW_STALE_HINT = "replay with --allow-stale to push it"
STALE_PREFIX = "stale:"


def stale_reason(
    created_at: datetime | None, received_at: datetime, max_age: timedelta
) -> str | None:
    """Why the event is too old to push, or None.  An event without a creation time, or one
    "created" after it arrived (clock skew), is not stale."""
    if created_at is None:
        return None
    age = received_at - created_at
    if age <= max_age:
        return None
    return (
        f"{STALE_PREFIX} created {format_age(age)} before it arrived (more than "
        f"intake.max_event_age_seconds = {max_age.total_seconds():g}); not pushed "
        f"({ALLOW_STALE_HINT})"
    )


def format_age(age: timedelta) -> str:
    """``7d 2h``, ``12m 5s``, ``40s``: the two largest units."""
    seconds = int(age.total_seconds())
    parts: list[str] = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts[:2])


def is_stale_reason(reason: str | None) -> bool:
    return bool(reason) and str(reason).startswith(STALE_PREFIX)

"""Durations as operators type them: ``90s``, ``30m``, ``8h``, ``1h30m``, ``2d``, ``1w``."""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(r"(\d+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``1h``, ``1h30m``, ``2d``, ``1w`` as a positive timedelta."""
    value = text.strip().lower()
    if not value or _DURATION.sub("", value):
        raise ValueError(f"{text!r} is not a duration such as 30m, 1h, 1h30m, 2d or 1w")
    seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION.findall(value))
    if seconds <= 0:
        raise ValueError("the duration must be longer than zero")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"{text!r} is too long a duration") from None


_UNITS = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))


def format_duration(duration: timedelta) -> str:
    """A duration as a person writes it: ``30 days``, ``1 hour 30 minutes``, ``45 seconds``
    (the two largest units, whole seconds; never ``30 days, 0:00:00``)."""
    seconds = round(abs(duration.total_seconds()))
    parts: list[str] = []
    for name, size in _UNITS:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {name}{'' if count == 1 else 's'}")
    if not parts:
        return "0 seconds"
    return ("-" if duration < timedelta(0) else "") + " ".join(parts[:2])

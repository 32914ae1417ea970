"""Durations read as operators type them and written as people write them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from worker.foundation.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (timedelta(days=30), "30 days"),
        (timedelta(days=1), "1 day"),
        (timedelta(hours=1), "1 hour"),
        (timedelta(hours=1, minutes=30), "1 hour 30 minutes"),
        (timedelta(days=2, hours=3, minutes=4, seconds=5), "2 days 3 hours"),
        (timedelta(seconds=45), "45 seconds"),
        (timedelta(seconds=0.4), "0 seconds"),
        (timedelta(minutes=-5), "-5 minutes"),
    ],
)
def test_format_duration(duration, text):
    assert format_duration(duration) == text


@pytest.mark.parametrize("typed", ["30d", "12w", "90s", "1h30m", "8h"])
def test_what_is_typed_reads_back_without_clock_notation(typed):
    shown = format_duration(parse_duration(typed))
    assert ":" not in shown and "," not in shown

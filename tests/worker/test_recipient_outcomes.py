"""worker.recipient_outcomes: the reach wording every view shares, and which event types have a
reach.  (Recording skipped recipients is tested through the ring and fan-out paths:
tests/worker/test_ringing.py, test_notifications.py.)"""

from __future__ import annotations

import pytest

from worker.event_processing import HANDLERS
from worker.recipient_outcomes import PUSHED_EVENT_TYPES, reach_of


def test_the_event_types_with_a_reach_are_those_processing_pushes():
    assert frozenset(HANDLERS) == PUSHED_EVENT_TYPES


@pytest.mark.parametrize(
    ("event_type", "recipients", "reached", "summary"),
    [
        ("call.ring", 3, 2, "reached 2 of 3 recipients"),
        ("call.ring", 1, 1, "reached 1 of 1 recipient"),
        ("call.ring", 2, 0, "rang nobody (2 recipients)"),
        ("call.ring", 1, 0, "rang nobody (1 recipient)"),
        ("call.ring", 0, 0, "rang nobody"),
        ("call.missed", 4, 0, "reached nobody (4 recipients)"),
        ("call.notification", 10, 9, "reached 9 of 10 recipients"),
    ],
)
def test_reach_wording(event_type, recipients, reached, summary):
    reach = reach_of(event_type, recipients, reached)
    assert (reach.recipients, reach.reached, reach.summary) == (recipients, reached, summary)

"""worker.delivery.recipient_outcomes: the reach wording every view shares, and which event types
have a reach.  (Recording skipped recipients is tested through the ring and fan-out paths:
tests/worker/delivery/test_ringing.py, test_notifications.py.)"""

from __future__ import annotations

import pytest

from worker.delivery.event_processing import HANDLERS
from worker.delivery.recipient_outcomes import PUSHED_EVENT_TYPES, reach_of


def test_the_event_types_with_a_reach_are_those_processing_pushes():
    assert frozenset(HANDLERS) == PUSHED_EVENT_TYPES


@pytest.mark.parametrize(
    ("event_type", "recipients", "reached", "unconfirmed", "summary"),
    [
        ("call.ring", 3, 2, 0, "reached 2 of 3 recipients"),
        ("call.ring", 3, 2, 1, "reached 2 of 3 recipients"),
        ("call.ring", 1, 1, 0, "reached 1 of 1 recipient"),
        ("call.ring", 2, 0, 0, "rang nobody (2 recipients)"),
        ("call.ring", 1, 0, 0, "rang nobody (1 recipient)"),
        ("call.ring", 0, 0, 0, "rang nobody"),
        # A lost answer may have rung: never "rang nobody" outright.
        ("call.ring", 2, 0, 1, "rang nobody for certain (1 of 2 unconfirmed)"),
        ("call.missed", 4, 0, 0, "reached nobody (4 recipients)"),
        ("call.notification", 10, 9, 0, "reached 9 of 10 recipients"),
    ],
)
def test_reach_wording(event_type, recipients, reached, unconfirmed, summary):
    reach = reach_of(event_type, recipients, reached, unconfirmed)
    assert (reach.recipients, reach.reached, reach.unconfirmed, reach.summary) == (
        recipients,
        reached,
        unconfirmed,
        summary,
    )

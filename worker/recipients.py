"""Who must be told about an event (stream-protocol.md §6)."""

from __future__ import annotations

from worker.stream_events import CallEvent


def ring_recipients(event: CallEvent) -> list[str]:
    """The event's members minus the caller, minus anyone who already accepted or rejected
    (§6; §2.4: Stream already leaves the creator out of call.ring members, we make sure)."""
    excluded = {event.created_by_id, event.actor_id} | event.accepted_by | event.rejected_by
    return [m.user_id for m in event.members if m.user_id not in excluded]

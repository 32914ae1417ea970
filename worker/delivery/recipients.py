"""Who must be told about an event (stream-protocol.md §6), at any call size."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from worker.stream.events import (
    LIVE_STARTED,
    MISSED,
    NOTIFICATION,
    SESSION_STARTED,
    CallEvent,
)

log = logging.getLogger("callpush.recipients")

# Stream caps a call's member list at 100 in most requests (§2.4); an event listing that many may
# have been cut short, so the member list is then read from QueryCallMembers instead.
MAYBE_TRUNCATED = 100


@dataclass(frozen=True, slots=True)
class Recipient:
    user_id: str
    display_name: str


class Member(Protocol):
    @property
    def user_id(self) -> str: ...

    @property
    def display_name(self) -> str: ...


class MemberDirectory(Protocol):
    """Pages of a call's members (Stream's QueryCallMembers, worker/stream/api.py)."""

    def iter_call_member_pages(
        self, call_type: str, call_id: str, page_size: int = 100
    ) -> Iterator[Sequence[Member]]: ...


def ring_recipients(event: CallEvent, directory: MemberDirectory | None = None) -> list[str]:
    """The event's members minus the caller, minus anyone who already accepted or rejected
    (§6; §2.4: Stream already leaves the creator out of call.ring members, we make sure).
    A list of 100 or more may be cut short: then the members come from ``directory``."""
    excluded = {event.created_by_id, event.actor_id} | event.accepted_by | event.rejected_by
    ids = [m.user_id for m in event.members]
    if directory is not None and len(ids) >= MAYBE_TRUNCATED:
        call_type, call_id = event.call_cid.split(":", 1)
        ids = [
            m.user_id for page in directory.iter_call_member_pages(call_type, call_id) for m in page
        ]
    return [user_id for user_id in dict.fromkeys(ids) if user_id not in excluded]


def recipient_pages(
    event: CallEvent, directory: MemberDirectory | None, page_size: int = 100
) -> Iterator[list[Recipient]]:
    """The recipients of a non-ring event, a page at a time, each user once, never the actor.

    - call.notification: the members minus the sender;
    - call.missed: the members the event lists (those who missed it) minus the caller;
    - call.session_started: all call members not already in the session;
    - call.live_started: all call members minus the host.
    """
    excluded = {event.actor_id, _host(event)} - {None}
    if event.type == SESSION_STARTED:
        excluded |= event.participants
    seen: set[str] = set()
    for page in _member_pages(event, directory, page_size):
        fresh = [r for r in page if r.user_id not in excluded and r.user_id not in seen]
        seen.update(r.user_id for r in fresh)
        if fresh:
            yield fresh


def _host(event: CallEvent) -> str | None:
    # The creator started the session or went live; the caller of a missed call is the actor.
    return event.created_by_id if event.type in (SESSION_STARTED, LIVE_STARTED) else None


def _member_pages(
    event: CallEvent, directory: MemberDirectory | None, page_size: int
) -> Iterator[list[Recipient]]:
    listed = [Recipient(m.user_id, m.display_name) for m in event.members]
    use_directory = event.type in (SESSION_STARTED, LIVE_STARTED) or (
        event.type == NOTIFICATION and (not listed or len(listed) >= MAYBE_TRUNCATED)
    )
    if event.type == MISSED or not use_directory:
        yield from _pages(listed, page_size)
        return
    if directory is None:
        log.warning(
            "%s for %s: no Stream API configured to list the call's members; using the %d the "
            "event carries",
            event.type,
            event.call_cid,
            len(listed),
        )
        yield from _pages(listed, page_size)
        return
    call_type, call_id = event.call_cid.split(":", 1)
    for page in directory.iter_call_member_pages(call_type, call_id, page_size):
        yield [Recipient(m.user_id, m.display_name) for m in page]


def _pages(items: list[Recipient], size: int) -> Iterator[list[Recipient]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]

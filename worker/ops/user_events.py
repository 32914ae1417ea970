"""Which stored events concerned a user: as the caller, as the one who accepted, rejected or
ended the call, as a member the event names, as a recipient of a fan-out chunk, or as the owner
of a device that got a push.

Three index-friendly queries, each newest first and cut at ``limit + 1`` ids, merged: the
newest ``limit`` of the union are the newest ``limit`` events of the user, so paging by an id
cursor (``WebhookEvent.id < before``) is exact.

* deliveries: ``ix_deliveries_user_id_event_id`` (migration 0006) finds a user's pushes without
  reading anyone else's;
* bodies: the caller and members are only in the stored JSON body, so the body is searched with
  ``LIKE`` for the user id as a JSON string, inside the time window (``received_at`` is
  indexed), then each match is confirmed by reading the body (the id may appear elsewhere, as a
  call name);
* fan-out chunks: the recipients a fan-out resolved (from Stream's QueryCallMembers) are stored
  as JSON ``[[user_id, name], ...]``.

Callers always bound the time window: the body search reads every body of the window (on the
database server, which sends back only the matching ids).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from worker.storage.models import Delivery, FanoutChunk, WebhookEvent

CALLER = "caller"  # created the call, or sent the ring / notification / missed call
ACTOR = "actor"  # the event's user otherwise: who accepted, rejected, ended, went live
MEMBER = "member"
RECIPIENT = "recipient"
# The event types whose `user` is the one calling (worker.stream.events reads the caller there).
_SENT_BY_CALLER = frozenset(
    {"call.ring", "call.notification", "call.missed", "call.session_started", "call.live_started"}
)
# Body matches are confirmed in batches of this many rows: a user id that also appears as
# other text (a call named "bob") costs a few extra rounds, never an unbounded read.
_BODY_BATCH = 200


def json_spellings(user_id: str) -> list[str]:
    """The ways a JSON encoder may have written ``user_id`` as a string: as is (UTF-8), with
    non-ASCII characters escaped (Python's default), and with <, > and & escaped (Go's
    encoding/json, which Stream's servers use: https://pkg.go.dev/encoding/json#Marshal)."""
    plain = json.dumps(user_id, ensure_ascii=False)
    go_style = (
        plain.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )
    return list(dict.fromkeys([plain, json.dumps(user_id), go_style]))


def roles_in_body(body: Any, user_id: str) -> set[str]:
    """What the stored body says of the user: the caller (the call's ``created_by``, or the
    ``user`` of an event the caller sends, as worker.stream.events reads them), the actor (the
    ``user`` who accepted, rejected or ended it) and/or a member it lists."""
    roles: set[str] = set()
    if not isinstance(body, Mapping):
        return roles
    call = _mapping(body.get("call"))
    if _mapping(call.get("created_by")).get("id") == user_id:
        roles.add(CALLER)
    if _mapping(body.get("user")).get("id") == user_id:
        roles.add(CALLER if body.get("type") in _SENT_BY_CALLER else ACTOR)
    members = body.get("members")
    if isinstance(members, list):
        for entry in members:
            entry = _mapping(entry)
            if user_id in (entry.get("user_id"), _mapping(entry.get("user")).get("id")):
                roles.add(MEMBER)
                break
    return roles


def matching_event_ids(
    session: Session,
    user_id: str,
    conditions: Sequence[ColumnElement[bool]],
    limit: int,
) -> tuple[list[int], bool]:
    """The newest ``limit`` ids of events (meeting ``conditions`` on WebhookEvent) that concern
    the user, newest first, and whether there are more."""
    wanted = limit + 1
    found = set(_ids_with_deliveries(session, user_id, conditions, wanted))
    found.update(_ids_in_chunks(session, user_id, conditions, wanted))
    # Only the newest `wanted` ids of the union count: once the indexed searches found that
    # many, the body search need not read bodies older than the oldest of those (for a user
    # who is rung often, the span of his last pages instead of the whole window).
    newest = sorted(found, reverse=True)[:wanted]
    floor = [WebhookEvent.id >= newest[-1]] if len(newest) == wanted else []
    found.update(_ids_in_bodies(session, user_id, [*conditions, *floor], wanted))
    ordered = sorted(found, reverse=True)
    return ordered[:limit], len(ordered) > limit


def chunk_recipient_of(session: Session, user_id: str, event_ids: Sequence[int]) -> set[int]:
    """The events among ``event_ids`` whose fan-out chunks list the user."""
    if not event_ids:
        return set()
    query = select(FanoutChunk.event_id).where(
        FanoutChunk.event_id.in_(list(event_ids)),
        FanoutChunk.recipients.contains(_chunk_needle(user_id), autoescape=True),
    )
    return set(session.scalars(query))


def _chunk_needle(user_id: str) -> str:
    # worker.storage.fanout writes json.dumps([[user_id, name], ...]): each pair starts with
    # "[" and the id in Python's default spelling, followed by ", ".
    return f"[{json.dumps(user_id)}, "


def _ids_with_deliveries(
    session: Session, user_id: str, conditions: Sequence[ColumnElement[bool]], wanted: int
) -> list[int]:
    query = (
        select(Delivery.event_id)
        .join(WebhookEvent, WebhookEvent.id == Delivery.event_id)
        .where(Delivery.user_id == user_id, *conditions)
        .group_by(Delivery.event_id)
        .order_by(Delivery.event_id.desc())
        .limit(wanted)
    )
    return list(session.scalars(query))


def _ids_in_chunks(
    session: Session, user_id: str, conditions: Sequence[ColumnElement[bool]], wanted: int
) -> list[int]:
    query = (
        select(FanoutChunk.event_id)
        .join(WebhookEvent, WebhookEvent.id == FanoutChunk.event_id)
        .where(
            FanoutChunk.recipients.contains(_chunk_needle(user_id), autoescape=True), *conditions
        )
        .group_by(FanoutChunk.event_id)
        .order_by(FanoutChunk.event_id.desc())
        .limit(wanted)
    )
    return list(session.scalars(query))


def _ids_in_bodies(
    session: Session, user_id: str, conditions: Sequence[ColumnElement[bool]], wanted: int
) -> list[int]:
    mentioned = or_(
        *(WebhookEvent.body.contains(text, autoescape=True) for text in json_spellings(user_id))
    )
    confirmed: list[int] = []
    before: int | None = None
    while len(confirmed) < wanted:
        query = select(WebhookEvent.id, WebhookEvent.body).where(mentioned, *conditions)
        if before is not None:
            query = query.where(WebhookEvent.id < before)
        rows = session.execute(query.order_by(WebhookEvent.id.desc()).limit(_BODY_BATCH)).all()
        for event_id, body in rows:
            if roles_in_body(_parsed(body), user_id):
                confirmed.append(event_id)
        if len(rows) < _BODY_BATCH:
            break
        before = rows[-1][0]
    return confirmed[:wanted]


def _parsed(body: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}

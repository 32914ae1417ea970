"""Re-ingesting webhook bodies saved elsewhere (`callpush events import FILE`).

One JSON document per line, either a Stream event as Stream sent it::

    {"type": "call.ring", "call_cid": "default:123", ...}

or an envelope carrying the webhook id it arrived with (so a body the inbox already holds under
that id is recognised)::

    {"webhook_id": "9a1c…", "body": "{\\"type\\": \\"call.ring\\", …}"}   (body: text or object)

No signature is needed (an operator imports, not the Internet) but the events are stored for a
configured app's API key.  A line is stored exactly as the receiver stores a webhook (same status
rules, same dedupe: the webhook id, else ``sha256:<body digest>``), and a body the inbox already
holds under another id is a duplicate too.  Every line is stored before any is queued, so a
``call.accepted`` later in the file already stops the ring it follows when that ring is processed.

Lines are stored in batches (:data:`BATCH_LINES` to a transaction): the dedupe lookups of a
batch are one query each and its new rows one multi-row INSERT, decided in the file's order so a
line still counts as a duplicate of an earlier line of the same batch.  A line that collides
with a stored webhook id or body digest goes through :func:`store_webhook` alone, with the
receiver's rules (dedupe window included).  20,000 lines took minutes line by line
(``python -m bench.import_speed`` measures it).

Saved webhooks are usually old: a push event Stream created longer than
``intake.max_event_age_seconds`` ago is stored as ignored (a days-old `call.missed` must not
reach a phone by accident) unless the operator imports with ``--allow-stale``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, BinaryIO

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from worker.foundation.handoff import Handoff
from worker.foundation.settings import IntakeSettings
from worker.intake.webhooks import DEFAULT_RULES, IntakeRules, load_event_json, webhook_for_event
from worker.storage.database import Database
from worker.storage.inbox import NewWebhook, StoredWebhook, store_webhook
from worker.storage.models import EventStatus, WebhookEvent, utcnow
from worker.storage.upsert import insert_ignoring_conflicts
from worker.stream.event_age import is_stale_reason
from worker.stream.events import InvalidEvent

log = logging.getLogger("callpush.import")

# (event id, event type): queue it like the receiver does, or process it inline.

ENVELOPE_FIELDS = frozenset({"webhook_id", "body", "api_key"})
MAX_WEBHOOK_ID = 128  # the column's size
MAX_PROBLEMS = 50  # invalid lines reported individually; the rest are only counted
# Events of one type and call compared with an imported one (a call has a handful).
MAX_SAME_CALL = 500
DEFAULT_DEDUPE_WINDOW = timedelta(seconds=IntakeSettings().dedupe_window_seconds)


class InvalidLine(ValueError):
    """A line that cannot be imported; the message says why (never quoting the line)."""


# Reading the file: in chunks, never more than one line (at most max_line_bytes) in memory.
READ_CHUNK_BYTES = 64 * 1024


def max_line_bytes(max_body_bytes: int) -> int:
    """The longest line read: an envelope's body is escaped JSON text, up to about four times
    the body (``\\u00e9`` for ``é``) plus the envelope's own fields."""
    return 4 * max_body_bytes + 4096


def read_lines(stream: BinaryIO, max_bytes: int) -> Iterator[str | InvalidLine]:
    """The file's lines as text, one item per line (so the numbering stays right): a line that
    is not UTF-8 or is longer than ``max_bytes`` is an :class:`InvalidLine` (its bytes skipped,
    not kept).  Works on a binary file, a file without a final newline, and stdin."""
    pending = bytearray()
    too_long = False
    first = True
    while chunk := stream.read(READ_CHUNK_BYTES):
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            if not too_long:
                pending += chunk[start:end]
            yield _line(pending, too_long, max_bytes, first)
            pending.clear()
            too_long, first = False, False
            start = end + 1
        if not too_long:
            pending += chunk[start:]
            if len(pending) > max_bytes:
                pending.clear()
                too_long = True
    if pending or too_long:
        yield _line(pending, too_long, max_bytes, first)


def _line(raw: bytearray, too_long: bool, max_bytes: int, first: bool) -> str | InvalidLine:
    if too_long or len(raw) > max_bytes:
        return InvalidLine(f"longer than {max_bytes} bytes")
    if first and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark
        del raw[:3]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return InvalidLine(f"not UTF-8 text (byte {error.start + 1} of the line)")


@dataclass
class ImportReport:
    imported: int = 0
    duplicates: int = 0
    invalid: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line number, why)
    queued: int = 0
    not_queued: list[int] = field(default_factory=list)  # left for the inbox sweeper
    # Imported, but stored as ignored: too old to push without --allow-stale.
    stale: int = 0
    # Imported, but stored as failed: an event nothing can be done with (reason in the log).
    failed: int = 0

    def note_invalid(self, line_number: int, reason: str) -> None:
        self.invalid += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append((line_number, reason))


def webhook_from_line(
    line: str,
    api_key: str,
    max_bytes: int,
    rules: IntakeRules = DEFAULT_RULES,
    received_at: datetime | None = None,
) -> NewWebhook:
    """The inbox row for one line, as the receiver would store it (received now)."""
    try:
        document = load_event_json(line)
    except (ValueError, RecursionError) as error:
        raise InvalidLine(f"not JSON ({error.__class__.__name__})") from None
    if not isinstance(document, dict):
        raise InvalidLine("not a JSON object")
    webhook_id: str | None = None
    if "body" in document and "type" not in document:
        unknown = sorted(set(document) - ENVELOPE_FIELDS)
        if unknown:
            raise InvalidLine(f"unknown envelope field {unknown[0]!r}")
        if document.get("api_key") not in (None, api_key):
            raise InvalidLine("the envelope's api_key is not the one imported for")
        webhook_id = document.get("webhook_id")
        if webhook_id is not None and (
            not isinstance(webhook_id, str)
            or not webhook_id.strip()
            or len(webhook_id) > MAX_WEBHOOK_ID
        ):
            raise InvalidLine(f"webhook_id must be a non-empty string of at most {MAX_WEBHOOK_ID}")
        body = document["body"]
        if isinstance(body, dict):
            text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
            if not _encodable(text):  # lone surrogates: keep them as JSON escapes
                text = json.dumps(body, separators=(",", ":"))
        elif isinstance(body, str):
            text = body
            try:
                body = load_event_json(text)
            except (ValueError, RecursionError):
                raise InvalidLine("the envelope's body is not JSON") from None
        else:
            raise InvalidLine("the envelope's body must be a JSON object or its text")
        document = body
    else:
        text = line
    if not _encodable(text):
        raise InvalidLine("the body is not valid Unicode (a lone surrogate)")
    raw = text.encode("utf-8")
    if len(raw) > max_bytes:
        raise InvalidLine(f"body larger than {max_bytes} bytes")
    try:
        return webhook_for_event(
            document,
            raw,
            api_key=api_key,
            webhook_id=webhook_id,
            received_at=received_at or utcnow(),
            rules=rules,
        )
    except InvalidEvent as error:
        raise InvalidLine(str(error)) from None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# Lines stored per transaction: the dedupe lookups are one query per batch and the new rows one
# multi-row INSERT, instead of several round trips per line (20,000 lines took six minutes).
BATCH_LINES = 500
# A batch is stored early once its bodies reach this size (bodies may be up to max_body_bytes).
BATCH_BYTES = 8 * 1024 * 1024


def count_lines(stream: BinaryIO) -> int | None:
    """The number of lines of a seekable file (for a progress bar's ETA), read in chunks and
    rewound; None for a pipe or stdin."""
    try:
        if not stream.seekable():
            return None
        start = stream.tell()
    except (OSError, ValueError):
        return None
    count, last = 0, b"\n"
    while chunk := stream.read(READ_CHUNK_BYTES):
        count += chunk.count(b"\n")
        last = chunk[-1:]
    stream.seek(start)
    return count + (last != b"\n")


def import_lines(
    db: Database,
    lines: Iterable[str | InvalidLine],
    api_key: str,
    handoff: Handoff,
    *,
    max_bytes: int,
    rules: IntakeRules = DEFAULT_RULES,
    dedupe_window: timedelta = DEFAULT_DEDUPE_WINDOW,
    progress: Callable[[int], None] | None = None,
    dispatched: Callable[[int, int], None] | None = None,
    batch_lines: int = BATCH_LINES,
) -> ImportReport:
    """Store every valid line (a transaction per ``batch_lines`` lines), then dispatch the new
    events that need processing, in the file's order.  ``progress(n)`` is called as lines are
    stored (n lines at a time), ``dispatched(done, total)`` after each event dispatched.  A
    push event Stream created longer than ``rules.max_event_age`` ago is stored as ignored
    unless ``rules.allow_stale``."""
    report = ImportReport()
    to_process: list[tuple[int, str]] = []
    batch: list[NewWebhook] = []
    batch_bytes = 0
    handled = 0  # lines read since the last progress report (blank and invalid ones too)

    def flush() -> None:
        nonlocal batch_bytes, handled
        if batch:
            _store_batch(db, batch, dedupe_window, report, to_process)
            batch.clear()
        batch_bytes = 0
        if progress is not None and handled:
            progress(handled)
        handled = 0

    for number, line in enumerate(lines, start=1):
        handled += 1
        if isinstance(line, InvalidLine):
            report.note_invalid(number, str(line))
            continue
        text = line.strip()
        if not text:
            continue
        try:
            webhook = webhook_from_line(text, api_key, max_bytes, rules)
        except InvalidLine as error:
            report.note_invalid(number, str(error))
            continue
        batch.append(webhook)
        batch_bytes += len(webhook.body)
        if len(batch) >= batch_lines or batch_bytes >= BATCH_BYTES:
            flush()
    flush()
    for done, (event_id, event_type) in enumerate(to_process, start=1):
        try:
            handoff.queue_event(event_id, event_type)
            report.queued += 1
        except Exception as error:
            # Stored already: the inbox sweeper (or `callpush run` at start-up) queues them.
            # A broker that refused one will refuse the next too (each after its timeout),
            # so the rest are left to the sweeper as well.  An expected situation (the broker
            # is down): one line, no traceback.
            left = [event_id for event_id, _ in to_process[done - 1 :]]
            log.warning(
                "%d imported event(s) stored but not queued (%s: %s); the inbox sweeper "
                "queues them later",
                len(left),
                type(error).__name__,
                error,
            )
            report.not_queued.extend(left)
            break
        if dispatched is not None:
            dispatched(done, len(to_process))
    return report


def _store_batch(
    db: Database,
    batch: list[NewWebhook],
    dedupe_window: timedelta,
    report: ImportReport,
    to_process: list[tuple[int, str]],
) -> None:
    """One transaction, decided line by line in the file's order as before: a line whose event
    the inbox (or an earlier line) holds under another webhook id is a duplicate; one that
    collides with a stored webhook id or body digest goes through :func:`store_webhook` (the
    receiver's rules, dedupe window included); the rest are inserted in one statement."""
    with db.transaction() as session:
        seen = _SameBodyIndex.load(session, batch)
        stored_ids, stored_digests = _stored_keys(session, batch)
        taken: set[str] = set()  # webhook ids of this batch's lines stored or about to be
        # (webhook, stored) in the file's order; stored is None until the INSERT below.
        outcomes: list[tuple[NewWebhook, StoredWebhook | None]] = []
        for webhook in batch:
            if seen.holds(webhook) or webhook.webhook_id in taken:
                report.duplicates += 1
                continue
            taken.add(webhook.webhook_id)
            if webhook.webhook_id in stored_ids or webhook.body_digest in stored_digests:
                stored = store_webhook(session, webhook, dedupe_window)
                if stored.duplicate:
                    report.duplicates += 1
                    continue
                outcomes.append((webhook, stored))
            else:
                outcomes.append((webhook, None))
            seen.add(webhook)
        inserted = _insert_all(session, [w for w, stored in outcomes if stored is None])
        for webhook, known in outcomes:
            if known is not None:
                stored = known
            elif (event_id := inserted.get(webhook.webhook_id)) is not None:
                stored = StoredWebhook(event_id, duplicate=False, status=webhook.status)
            else:
                # Stored meanwhile by someone else (the same webhook arriving now).
                stored = store_webhook(session, webhook, dedupe_window)
                if stored.duplicate:
                    report.duplicates += 1
                    continue
            _count_imported(report, webhook, stored)
            if stored.status == EventStatus.RECEIVED:
                to_process.append((stored.event_id, webhook.event_type))


def _stored_keys(session: Session, batch: list[NewWebhook]) -> tuple[set[str], set[str]]:
    """The batch's webhook ids and body digests the inbox holds already (one query each)."""
    ids = {w.webhook_id for w in batch}
    stored_ids = set(
        session.scalars(select(WebhookEvent.webhook_id).where(WebhookEvent.webhook_id.in_(ids)))
    )
    digests = {w.body_digest for w in batch if w.body_digest}
    stored_digests: set[str] = set()
    for api_key in {w.api_key for w in batch}:
        stored_digests.update(
            d
            for d in session.scalars(
                select(WebhookEvent.body_digest).where(
                    WebhookEvent.api_key == api_key, WebhookEvent.body_digest.in_(digests)
                )
            )
            if d
        )
    return stored_ids, stored_digests


def _count_imported(report: ImportReport, webhook: NewWebhook, stored: StoredWebhook) -> None:
    report.imported += 1
    if is_stale_reason(webhook.status_reason):
        report.stale += 1
    elif webhook.status == EventStatus.FAILED:
        report.failed += 1
        log.warning(
            "imported event %s (%s) failed: %s",
            stored.event_id,
            webhook.event_type,
            webhook.status_reason,
        )


def _insert_all(session: Session, webhooks: list[NewWebhook]) -> dict[str, int]:
    """Insert the webhooks, skipping any that collide with a stored one (any unique index):
    {webhook id: new event id} of those inserted."""
    if not webhooks:
        return {}
    rows = [
        {
            "webhook_id": w.webhook_id,
            "api_key": w.api_key,
            "event_type": w.event_type,
            "call_cid": w.call_cid,
            "session_id": w.session_id,
            "event_created_at": w.event_created_at,
            "received_at": w.received_at or utcnow(),
            "attempt": w.attempt,
            "body": w.body,
            "body_digest": w.body_digest,
            "status": w.status,
            "status_reason": w.status_reason,
            "processing_attempts": 0,
            "allow_stale": w.allow_stale,
        }
        for w in webhooks
    ]
    # Core, not the ORM's bulk insert: SQLAlchemy's "insertmanyvalues" sends the rows as a few
    # multi-row INSERT … RETURNING statements, where the ORM path here sent one per row.
    table = WebhookEvent.__table__
    statement = insert_ignoring_conflicts(session, table, None).returning(
        table.c.webhook_id, table.c.id
    )
    result = session.connection().execute(statement, rows)
    return {webhook_id: event_id for webhook_id, event_id in result}


class _SameBodyIndex:
    """What :func:`_holds` compares an imported event with: the inbox already holds this event
    of this app under another webhook id (Stream sent it with an X-Webhook-Id and the export
    kept only the body, maybe re-serialised), or an earlier line of the file carried it.  The
    stored events of the same app, type and call (at most MAX_SAME_CALL of each) are compared
    as JSON documents, so spacing and key order do not matter; events without a call (rare,
    never pushed) only by their exact text.  Another app's identical event is another event
    (apps are tenants).  Loaded with two queries for a whole batch."""

    def __init__(self) -> None:
        self.by_call: dict[tuple[str, str, str], list[tuple[str, Any]]] = {}
        self.without_call: set[tuple[str, str, str]] = set()

    @classmethod
    def load(cls, session: Session, batch: list[NewWebhook]) -> _SameBodyIndex:
        index = cls()
        for api_key in {w.api_key for w in batch}:
            of_app = [w for w in batch if w.api_key == api_key]
            index._load_calls(session, api_key, of_app)
            index._load_without_call(session, api_key, of_app)
        return index

    def _load_calls(self, session: Session, api_key: str, batch: list[NewWebhook]) -> None:
        wanted = {(w.event_type, w.call_cid) for w in batch if w.call_cid is not None}
        if not wanted:
            return
        numbered = (
            select(
                WebhookEvent.event_type,
                WebhookEvent.call_cid,
                WebhookEvent.body,
                func.row_number()
                .over(partition_by=(WebhookEvent.event_type, WebhookEvent.call_cid))
                .label("n"),
            )
            .where(
                WebhookEvent.api_key == api_key,
                WebhookEvent.call_cid.in_({cid for _, cid in wanted}),
                WebhookEvent.event_type.in_({event_type for event_type, _ in wanted}),
            )
            .subquery()
        )
        rows = session.execute(
            select(numbered.c.event_type, numbered.c.call_cid, numbered.c.body).where(
                numbered.c.n <= MAX_SAME_CALL
            )
        )
        for event_type, call_cid, body in rows:
            if (event_type, call_cid) in wanted:
                self._remember(api_key, event_type, call_cid, body)

    def _load_without_call(self, session: Session, api_key: str, batch: list[NewWebhook]) -> None:
        without = [w for w in batch if w.call_cid is None]
        if not without:
            return
        rows = session.execute(
            select(WebhookEvent.event_type, WebhookEvent.body).where(
                WebhookEvent.api_key == api_key,
                WebhookEvent.call_cid.is_(None),
                WebhookEvent.event_type.in_({w.event_type for w in without}),
                WebhookEvent.body.in_({w.body for w in without}),
            )
        )
        for event_type, body in rows:
            self.without_call.add((api_key, event_type, body))

    def _remember(self, api_key: str, event_type: str, call_cid: str, body: str) -> None:
        try:
            document = json.loads(body)
        except ValueError:
            document = _UNREADABLE
        self.by_call.setdefault((api_key, event_type, call_cid), []).append((body, document))

    def holds(self, webhook: NewWebhook) -> bool:
        if webhook.call_cid is None:
            return (webhook.api_key, webhook.event_type, webhook.body) in self.without_call
        stored = self.by_call.get((webhook.api_key, webhook.event_type, webhook.call_cid))
        if not stored:
            return False
        document = json.loads(webhook.body)
        return any(
            body == webhook.body or (other is not _UNREADABLE and other == document)
            for body, other in stored
        )

    def add(self, webhook: NewWebhook) -> None:
        """A line about to be stored: a later line of the same batch with its event is a
        duplicate of it."""
        if webhook.call_cid is None:
            self.without_call.add((webhook.api_key, webhook.event_type, webhook.body))
        else:
            self._remember(webhook.api_key, webhook.event_type, webhook.call_cid, webhook.body)


# A stored body that is not JSON: equal to no document (only to its own exact text).
_UNREADABLE = object()

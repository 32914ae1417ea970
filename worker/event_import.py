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
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.event_age import is_stale_reason
from worker.settings import IntakeSettings
from worker.storage.database import Database
from worker.storage.inbox import NewWebhook, store_webhook
from worker.storage.models import EventStatus, WebhookEvent, utcnow
from worker.stream_events import InvalidEvent
from worker.webhook_intake import DEFAULT_RULES, IntakeRules, load_event_json, webhook_for_event

log = logging.getLogger("callpush.import")

# (event id, event type): queue it like the receiver does, or process it inline.
DispatchEvent = Callable[[int, str], None]

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


def import_lines(
    db: Database,
    lines: Iterable[str | InvalidLine],
    api_key: str,
    dispatch: DispatchEvent,
    *,
    max_bytes: int,
    rules: IntakeRules = DEFAULT_RULES,
    dedupe_window: timedelta = DEFAULT_DEDUPE_WINDOW,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Store every valid line (one transaction each), then dispatch the new events that need
    processing.  ``progress(n)`` is called per line read.  A push event Stream created longer
    than ``rules.max_event_age`` ago is stored as ignored unless ``rules.allow_stale``."""
    report = ImportReport()
    to_process: list[tuple[int, str]] = []
    for number, line in enumerate(lines, start=1):
        if progress is not None:
            progress(1)
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
        with db.transaction() as session:
            if _same_body_stored(session, webhook):
                report.duplicates += 1
                continue
            stored = store_webhook(session, webhook, dedupe_window)
        if stored.duplicate:
            report.duplicates += 1
            continue
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
        if stored.status == EventStatus.RECEIVED:
            to_process.append((stored.event_id, webhook.event_type))
    for event_id, event_type in to_process:
        try:
            dispatch(event_id, event_type)
            report.queued += 1
        except Exception:
            # Stored already: the inbox sweeper (or `callpush run` at start-up) queues it.
            log.exception("imported event %s stored but not queued", event_id)
            report.not_queued.append(event_id)
    return report


def _same_body_stored(session: Session, webhook: NewWebhook) -> bool:
    """The inbox already holds this event of this app under another webhook id: Stream sent it
    with an X-Webhook-Id and the export kept only the body, maybe re-serialised.  The stored
    events of the same app, type and call are compared as JSON documents, so spacing and key
    order do not matter; events without a call (rare, never pushed) only by their exact text.
    Another app's identical event is another event (apps are tenants)."""
    query = select(WebhookEvent.body).where(
        WebhookEvent.api_key == webhook.api_key, WebhookEvent.event_type == webhook.event_type
    )
    if webhook.call_cid is None:
        exact = query.where(WebhookEvent.call_cid.is_(None), WebhookEvent.body == webhook.body)
        return session.scalar(exact.limit(1)) is not None
    document = json.loads(webhook.body)
    for stored in session.scalars(
        query.where(WebhookEvent.call_cid == webhook.call_cid).limit(MAX_SAME_CALL)
    ):
        try:
            if stored == webhook.body or json.loads(stored) == document:
                return True
        except ValueError:
            continue
    return False

"""Logging for every `callpush` process: one JSON object per line (or readable text), carrying the
event id and call cid being worked on, with device tokens and secrets redacted.

The event id and call cid travel in :mod:`contextvars`, set with :func:`log_context` by whoever
knows them (the webhook receiver, the event processing path, the Celery task signals), so no
function has to pass them down just to log them.  Context variables are per thread (and per
asyncio task), which is exactly the scope of one request or one task here.

Redaction is a safety net, not the policy: the code logs :func:`redact_token`
hints on purpose.  The filter catches what slips through (an exception text with an APNs URL, a
provider's error echoing the token, a connection URL with its password).
"""

from __future__ import annotations

import json as _json
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TextIO

from worker.foundation.secret_sources import MIN_MASKED_SECRET_LENGTH
from worker.foundation.text_escaping import escape_controls, escape_unsafe_in_json

if TYPE_CHECKING:
    from worker.foundation.settings import Settings

LogFormat = Literal["text", "json"]
LOG_FORMAT_ENV = "CALLPUSH_LOG_FORMAT"

_event_id: ContextVar[int | None] = ContextVar("callpush_event_id", default=None)
_call_cid: ContextVar[str | None] = ContextVar("callpush_call_cid", default=None)

# Set this way so a value of None can be told apart from "not given" in log_context().
_UNSET: Any = object()


def redact_token(token: str) -> str:
    """Enough of a device token to find it in the registry, never the whole of it."""
    if len(token) <= 12:
        return token[:2] + "…"
    return f"{token[:6]}…{token[-4:]}"


@contextmanager
def log_context(*, event_id: int | None = _UNSET, call_cid: str | None = _UNSET) -> Iterator[None]:
    """Log records inside the block carry these values; on exit the previous ones come back,
    including anything :func:`bind_log_context` set inside the block.  Arguments not given keep
    their current value (so a nested ``log_context(call_cid=...)`` keeps the event id)."""
    event_token = _event_id.set(_event_id.get() if event_id is _UNSET else event_id)
    cid_token = _call_cid.set(_call_cid.get() if call_cid is _UNSET else call_cid)
    try:
        yield
    finally:
        _call_cid.reset(cid_token)
        _event_id.reset(event_token)


def bind_log_context(*, event_id: int | None = _UNSET, call_cid: str | None = _UNSET) -> None:
    """Set the values for the rest of the current context, for code that learns them midway
    (the receiver knows the call cid after parsing, the event id after storing).  Use it inside
    a :func:`log_context` block, or reset it yourself: a thread-pool thread keeps its context
    from one request or task to the next."""
    if event_id is not _UNSET:
        _event_id.set(event_id)
    if call_cid is not _UNSET:
        _call_cid.set(call_cid)


def current_log_context() -> dict[str, Any]:
    """The values known here, without the unknown ones."""
    values = {"event_id": _event_id.get(), "call_cid": _call_cid.get()}
    return {key: value for key, value in values.items() if value is not None}


class ContextFilter(logging.Filter):
    """Copies the context values onto each record (``record.event_id``, ``record.call_cid``),
    where the formatters find them.  A value passed explicitly with ``extra=`` wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in current_log_context().items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        return True


# A whole APNs token is 64 hex characters (longer ones are allowed by Apple's docs).
_HEX_TOKEN = re.compile(r"[0-9A-Fa-f]{64,}")
# FCM registration tokens: "<instance id>:APA91b<~140 url-safe base64>", and anything else that
# long in that alphabet (no legitimate identifier of ours is 100+ characters without a separator).
_FCM_TOKEN = re.compile(r"[A-Za-z0-9_-]{8,}:APA91[A-Za-z0-9_-]{20,}|[A-Za-z0-9_:-]{100,}")
# Bearer credentials: APNs provider JWTs, Stream server tokens, Google OAuth access tokens.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_GOOGLE_ACCESS_TOKEN = re.compile(r"ya29\.[A-Za-z0-9_.-]+")
_BEARER = re.compile(r"(?i)\b(bearer\s+)\S+")
# The password of a database or broker URL (scheme://user:password@host).
_URL_PASSWORD = re.compile(r"(\w[\w+.-]*://[^:/@\s]*:)[^@\s]+@")
REDACTED = "[redacted]"


class Redactor:
    """Rewrites text so no whole device token, credential or known secret remains."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # The secrets come from worker.foundation.secret_sources.secret_values(settings), the list
        # `callpush config check` masks too; the length rule is repeated for any other caller.
        known = sorted(
            {s for s in secrets if len(s) >= MIN_MASKED_SECRET_LENGTH}, key=len, reverse=True
        )
        self._secrets = re.compile("|".join(re.escape(s) for s in known)) if known else None

    def __call__(self, text: str) -> str:
        if self._secrets is not None:
            text = self._secrets.sub(REDACTED, text)
        text = _JWT.sub(REDACTED, text)
        text = _GOOGLE_ACCESS_TOKEN.sub(REDACTED, text)
        text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
        text = _URL_PASSWORD.sub(lambda m: m.group(1) + "***@", text)
        # Tokens keep the same hint the deliveries table stores, so a log line can still be
        # matched to a device.
        text = _HEX_TOKEN.sub(lambda m: redact_token(m.group(0)), text)
        return _FCM_TOKEN.sub(lambda m: redact_token(m.group(0)), text)


# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(
    set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
)
_CONTEXT_KEYS = ("event_id", "call_cid")


class RedactingFilter(logging.Filter):
    """Redacts the formatted message, the exception and stack text and string ``extra`` values
    of each record before any formatter sees them.  Attached to the handler, so it also covers
    records that propagate from other libraries' loggers."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redact = redactor
        self._exception_formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            # Formatted here (as every formatter would) so the traceback text is redacted too;
            # formatters reuse ``exc_text`` when it is set.
            record.exc_text = self._exception_formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self._redact(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _RECORD_ATTRIBUTES:
                setattr(record, key, self._redact_value(value))
        return True

    def _redact_value(self, value: Any, depth: int = 0) -> Any:
        # ``extra=`` values reach the JSON line as they are, nested ones included (Celery logs
        # dicts); a few levels are enough for anything logged here.
        if isinstance(value, str):
            return self._redact(value)
        if depth < 4 and isinstance(value, dict):
            return {key: self._redact_value(item, depth + 1) for key, item in value.items()}
        if depth < 4 and isinstance(value, list | tuple):
            return [self._redact_value(item, depth + 1) for item in value]
        return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, pid, event_id / call_cid when
    known, exception / stack when present, and any ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for key in _CONTEXT_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and key not in _CONTEXT_KEYS:
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: an ``extra`` value that is not JSON (a datetime, an enum) still logs.
        # json.dumps escapes newlines and the other C0 controls; the rest that could end or
        # garble the line (U+2028, C1 controls, a lone surrogate from a webhook) is escaped too.
        return escape_unsafe_in_json(_json.dumps(entry, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """The readable format of `callpush run`, with the context appended when known.

    One record is one line starting with its time: control characters in the message and the
    context (a webhook's call cid or type may hold a newline or a terminal escape) are written
    as escapes, so no input can forge a line or drive the terminal.  A traceback follows on
    lines of its own, each indented, so it cannot pass for a record either."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        line = escape_controls(self.formatMessage(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        details = [record.exc_text] if record.exc_text else []
        if record.stack_info:
            details.append(self.formatStack(record.stack_info))
        for text in details:
            line += "".join(f"\n  {escape_controls(part)}" for part in text.split("\n"))
        return line

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        context = " ".join(
            f"{key}={getattr(record, key)}"
            for key in _CONTEXT_KEYS
            if getattr(record, key, None) is not None
        )
        return f"{line} [{context}]" if context else line


# Loggers that never pass their records to the root logger, so they get the handler too: else
# Python's last-resort handler writes their warnings to stderr as bare text.  billiard (Celery's
# prefork pool) logs as "multiprocessing" with propagate off, e.g. "Process 'ForkPoolWorker-1'
# pid:... exited with 'signal 15 (SIGTERM)'" when a worker stops
# (https://github.com/celery/billiard/blob/v4.3.2/billiard/util.py, get_logger).
NON_PROPAGATING_LOGGERS = ("multiprocessing",)


def configure_logging(
    level: str | int,
    json: bool,
    *,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send every record of the process, through the root logger, to ``stream`` (stderr) as
    JSON lines or text, with the context and redaction filters.  Calling it again replaces the
    handler it installed before (Celery re-runs it in each pool process); handlers installed by
    others (pytest's capture) are left alone."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter(Redactor(secrets)))
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    handler._callpush = True  # type: ignore[attr-defined]  # marks the handler as ours
    root = logging.getLogger()
    for logger in (root, *(logging.getLogger(name) for name in NON_PROPAGATING_LOGGERS)):
        for old in [h for h in logger.handlers if getattr(h, "_callpush", False)]:
            logger.removeHandler(old)
            old.close()
        logger.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # Warnings (Celery's "running as root", deprecations) as records too, not raw stderr text.
    logging.captureWarnings(True)
    return handler


def resolve_log_format(settings: Settings, default: LogFormat) -> LogFormat:
    """The ``log_format`` setting once it exists, else ``CALLPUSH_LOG_FORMAT``, else the
    command's default (text for `callpush run`, json for the production commands)."""
    configured = getattr(settings, "log_format", None) or os.environ.get(LOG_FORMAT_ENV)
    if not configured:
        return default
    value = str(configured).strip().lower()
    if value not in ("text", "json"):
        raise ValueError(f'{LOG_FORMAT_ENV} must be "text" or "json", not {configured!r}')
    return "json" if value == "json" else "text"

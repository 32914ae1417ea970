"""Structured logs: JSON lines with the event id and call cid from the context, and nothing that
looks like a whole device token or a secret."""

from __future__ import annotations

import io
import json
import logging
import threading

import pytest

from worker.foundation.logging_setup import (
    NON_PROPAGATING_LOGGERS,
    bind_log_context,
    configure_logging,
    current_log_context,
    log_context,
    redact_token,
    resolve_log_format,
)
from worker.foundation.settings import load_settings

APNS_TOKEN = "a1b2c3d4" * 8  # 64 hex characters: a whole APNs token
FCM_TOKEN = "fGx1bk9aQ0Kx2b3c4d5e6f:APA91bH" + "Zq8_w-Yt3" * 16  # the shape FCM hands out
SECRET = "stream-secret-0123456789abcdef"
log = logging.getLogger("callpush.test")


@pytest.fixture
def output():
    """Configure logging into a buffer; put the root logger back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    buffer = io.StringIO()

    def configure(json_lines: bool = True, secrets=(SECRET,)):
        configure_logging("INFO", json=json_lines, secrets=secrets, stream=buffer)
        return buffer

    yield configure
    for logger in (root, *(logging.getLogger(n) for n in NON_PROPAGATING_LOGGERS)):
        for handler in logger.handlers:
            if getattr(handler, "_callpush", False) and handler not in handlers:
                logger.removeHandler(handler)
                handler.close()
    root.setLevel(level)


def lines(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_json_lines_carry_event_id_and_call_cid_from_the_context(output):
    buffer = output()
    log.info("before")
    with log_context(event_id=42, call_cid="default:abc"):
        log.info("processing %s", "the ring")
        with log_context(call_cid="default:other"):  # nested: keeps the event id
            log.warning("inner")
        log.info("back")
    log.info("after")

    before, processing, inner, back, after = lines(buffer)
    assert set(processing) >= {"time", "level", "logger", "message"}
    assert processing["message"] == "processing the ring"
    assert processing["level"] == "INFO" and processing["logger"] == "callpush.test"
    assert processing["time"].endswith("+00:00")  # ISO 8601, UTC
    assert (processing["event_id"], processing["call_cid"]) == (42, "default:abc")
    assert (inner["event_id"], inner["call_cid"]) == (42, "default:other")
    assert (back["event_id"], back["call_cid"]) == (42, "default:abc")
    for unknown in (before, after):  # absent, not null, when unknown
        assert "event_id" not in unknown and "call_cid" not in unknown


def test_values_bound_midway_are_reset_when_the_block_ends(output):
    buffer = output()
    with log_context(event_id=None, call_cid=None):
        bind_log_context(call_cid="default:abc")
        bind_log_context(event_id=7)
        log.info("stored")
    log.info("next request")
    stored, following = lines(buffer)
    assert (stored["event_id"], stored["call_cid"]) == (7, "default:abc")
    assert current_log_context() == {}
    assert "event_id" not in following


def test_the_context_belongs_to_one_thread(output):
    buffer = output()
    ready, done = threading.Event(), threading.Event()

    def other_request():
        ready.wait(5)
        log.info("other thread")
        done.set()

    thread = threading.Thread(target=other_request)
    thread.start()
    with log_context(event_id=1, call_cid="default:mine"):
        ready.set()
        done.wait(5)
    thread.join(5)
    (other,) = lines(buffer)
    assert "event_id" not in other


def test_exceptions_and_extra_fields_are_in_the_json(output):
    buffer = output()
    try:
        raise ValueError("provider said no")
    except ValueError:
        log.exception("send failed", extra={"provider": "apns", "attempt": 2})
    (entry,) = lines(buffer)
    assert entry["provider"] == "apns" and entry["attempt"] == 2
    assert "ValueError: provider said no" in entry["exception"]


def test_a_whole_apns_token_is_redacted_wherever_it_appears(output):
    buffer = output()
    log.info("pushing to %s", APNS_TOKEN)
    log.info(f"POST /3/device/{APNS_TOKEN.upper()}")
    log.info("device", extra={"payload": {"tokens": [APNS_TOKEN]}})
    try:
        raise RuntimeError(f"stream reset for /3/device/{APNS_TOKEN}")
    except RuntimeError:
        log.exception("apns error")
    text = buffer.getvalue()
    assert APNS_TOKEN not in text and APNS_TOKEN.upper() not in text
    first = lines(buffer)[0]
    # The same hint the deliveries table stores, so the line still finds the device.
    assert first["message"] == f"pushing to {redact_token(APNS_TOKEN)}"


def test_fcm_tokens_credentials_and_known_secrets_are_redacted(output):
    buffer = output()
    log.info("fcm token %s", FCM_TOKEN)
    log.info("signed with %s", SECRET)
    log.info("database postgresql+psycopg://callpush:hunter2-pw@db/callpush")
    log.info("authorization: Bearer ya29.a0AfH6SMBxyz-abc")
    log.info("provider token eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJURUFNIn0.c2lnbmF0dXJl")
    text = buffer.getvalue()
    for secret in (FCM_TOKEN, SECRET, "hunter2-pw", "ya29.a0AfH6SMBxyz", "eyJpc3MiOiJURUFNIn0"):
        assert secret not in text
    assert "callpush:***@db" in text  # the rest of the URL stays readable
    # Ordinary identifiers are left alone.
    log.info("event 12 call default:0f8c2a9e-1c1b-4a8e-9a43-0c2b1f9f3e77 webhook wh-123")
    assert lines(buffer)[-1]["message"].endswith(
        "default:0f8c2a9e-1c1b-4a8e-9a43-0c2b1f9f3e77 webhook wh-123"
    )


def test_text_format_appends_the_context(output):
    buffer = output(json_lines=False)
    with log_context(event_id=5, call_cid="default:abc"):
        log.info("ringing %s", APNS_TOKEN)
    line = buffer.getvalue().strip()
    assert line.endswith(f"ringing {redact_token(APNS_TOKEN)} [event_id=5 call_cid=default:abc]")


def test_billiards_own_logger_writes_json_lines_too(output):
    """Celery's prefork pool logs through billiard's "multiprocessing" logger, which does not
    propagate: without our handler on it, Python's last resort printed bare text to stderr."""
    from billiard.util import error, get_logger

    buffer = output()
    get_logger()  # billiard's set-up: propagate off, as in a worker
    error("Process %r pid:%r exited with %r", "ForkPoolWorker-1", 10043, "signal 15 (SIGTERM)")
    (record,) = lines(buffer)
    assert record["logger"] == "multiprocessing" and record["level"] == "ERROR"
    assert record["message"].startswith("Process 'ForkPoolWorker-1' pid:10043 exited")
    output()  # configured again: still one handler of ours on that logger
    ours = [h for h in logging.getLogger("multiprocessing").handlers if getattr(h, "_callpush", 0)]
    assert len(ours) == 1


def test_configuring_twice_replaces_the_handler(output):
    buffer = output()
    output()
    ours = [h for h in logging.getLogger().handlers if getattr(h, "_callpush", False)]
    assert len(ours) == 1
    log.info("once")
    assert len(lines(buffer)) == 1


def test_log_format_defaults_per_command_and_env_overrides(monkeypatch):
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    monkeypatch.delenv("CALLPUSH_LOG_FORMAT", raising=False)
    settings = load_settings()
    assert resolve_log_format(settings, "text") == "text"
    assert resolve_log_format(settings, "json") == "json"
    monkeypatch.setenv("CALLPUSH_LOG_FORMAT", "JSON")
    assert resolve_log_format(settings, "text") == "json"
    monkeypatch.setenv("CALLPUSH_LOG_FORMAT", "yaml")
    with pytest.raises(ValueError, match="CALLPUSH_LOG_FORMAT"):
        resolve_log_format(settings, "text")


def test_celery_tasks_carry_their_event_id(output):
    from celery.signals import task_postrun, task_prerun

    from worker.runtime.celery_app import create_celery
    from worker.runtime.tasks import PROCESS_RING, SWEEP_INBOX

    app = create_celery(load_settings(broker_url=None))
    ring, sweep = app.tasks[PROCESS_RING], app.tasks[SWEEP_INBOX]
    task_prerun.send(sender=ring, task_id="t1", task=ring, args=(17,), kwargs={})
    assert current_log_context() == {"event_id": 17}
    task_postrun.send(sender=ring, task_id="t1", task=ring, args=(17,), kwargs={})
    assert current_log_context() == {}
    task_prerun.send(sender=sweep, task_id="t2", task=sweep, args=(), kwargs={})
    assert current_log_context() == {}


FORGED = "call.ring\n2026-01-01 00:00:00,000 INFO callpush.admin: admin replay by root"


def test_text_lines_cannot_be_forged_by_event_fields(output):
    buffer = output(json_lines=False)
    with log_context(event_id=7, call_cid="default:x\r\n2026-01-01 00:00:00,000 ERROR fake"):
        log.info("stored %s from %s", FORGED, "\x1b[2J\x1b[31mattacker\u2028next\ud800")
    (line,) = buffer.getvalue().splitlines()
    assert "call.ring\\n2026-01-01 00:00:00,000 INFO callpush.admin" in line
    assert "\\x1b[2J\\x1b[31mattacker\\u2028next\\ud800" in line
    assert "call_cid=default:x\\r\\n2026-01-01" in line and "\x1b" not in line
    line.encode("utf-8")


def test_a_text_traceback_is_indented_under_its_record(output):
    buffer = output(json_lines=False)
    try:
        raise ValueError(FORGED)
    except ValueError:
        log.exception("failed")
    first, *rest = buffer.getvalue().rstrip("\n").split("\n")
    assert first.endswith("callpush.test: failed")
    assert rest and all(part.startswith("  ") for part in rest)
    assert rest[0] == "  Traceback (most recent call last):"
    assert any("2026-01-01 00:00:00,000 INFO callpush.admin" in part for part in rest)


def test_json_lines_escape_what_would_end_or_break_a_line(output):
    buffer = output()
    log.warning("odd: %s", "a\u2028b\u2029c\x85d\x9b[31m\ud800\n")
    raw = buffer.getvalue()
    raw.encode("utf-8")  # the lone surrogate did not make the line unwritable
    (line,) = raw.splitlines()  # str.splitlines also splits at U+2028, U+2029 and NEL
    assert json.loads(line)["message"] == "odd: a\u2028b\u2029c\x85d\x9b[31m\ud800\n"

"""POST /webhooks/stream: verify over the raw bytes → parse → store → enqueue → answer.

Stream retries on 408/429/5xx and network errors with the same X-Webhook-Id, for up to ~15 s
(https://getstream.io/video/docs/api/webhooks/overview/), so: 2xx only once the event is
committed to the inbox; 503 when the database is away (Stream retries); 4xx for requests no
retry can fix.  Every signed JSON object with a ``type`` is stored (an event the worker cannot
act on as failed, with the reason); only a body that is not such an object is refused (400).
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import RequestEntityTooLarge

from webhook_app.receiver import receiver
from worker.foundation import metrics
from worker.foundation.logging_setup import bind_log_context, log_context
from worker.intake.webhooks import (
    IntakeRules,
    attempt_number,
    load_event_json,
    webhook_for_event,
)
from worker.storage.database import DatabaseUnavailable
from worker.storage.db_errors import is_transient_db_error
from worker.storage.inbox import store_webhook
from worker.storage.models import EventStatus, utcnow
from worker.stream.event_age import is_stale_reason
from worker.stream.events import InvalidEvent
from worker.stream.signature import WebhookRejected, verify_webhook

log = logging.getLogger("callpush.webhook")
blueprint = Blueprint("stream_webhook", __name__)


# An answer and its outcome as ``callpush_webhooks_total`` counts it.
_Answer = tuple[ResponseReturnValue, str]


def _error(status: int, message: str, event_type: str | None = None) -> _Answer:
    metrics.record_webhook(event_type, str(status))
    return (jsonify(error=message), status), str(status)


@blueprint.post("/webhooks/stream")
def receive_stream_webhook() -> ResponseReturnValue:
    started = time.perf_counter()
    outcome = "500"  # until an answer says otherwise: an exception is a 500
    try:
        # The call cid and event id are bound as they become known; the block resets them, so
        # the next request on this server thread starts without them.
        with log_context(event_id=None, call_cid=None):
            response, outcome = _receive()
        return response
    except RequestEntityTooLarge:
        outcome = "413"
        raise
    finally:
        metrics.record_webhook_request(
            metrics.webhook_request_outcome(outcome), time.perf_counter() - started
        )


def _receive() -> _Answer:
    ctx = receiver()
    try:
        raw = request.get_data(cache=False)
    except RequestEntityTooLarge:
        metrics.record_webhook(None, "413")  # werkzeug answers it (MAX_CONTENT_LENGTH)
        raise
    api_key = request.headers.get("X-Api-Key", "")
    stream_app = ctx.settings.app_for_key(api_key)
    if stream_app is None:
        return _error(401, "missing or unknown X-Api-Key")
    try:
        body = verify_webhook(
            raw,
            request.headers.get("X-Signature"),
            [s.get_secret_value() for s in stream_app.api_secrets],
            ctx.settings.max_body_bytes,
        )
    except WebhookRejected as rejected:
        return _error(rejected.status, rejected.message)

    try:
        # Strictly UTF-8 (json.loads would also take UTF-16/32, whose NUL bytes no text column
        # stores), and strictly JSON: no NaN or Infinity.
        document = load_event_json(body.decode("utf-8"))
    except UnicodeDecodeError:
        return _error(400, "malformed event: the body is not UTF-8")
    except (ValueError, RecursionError) as error:
        # RecursionError: JSON nested deeper than the parser's limit (~1000 levels).
        message = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        return _error(400, f"malformed event: {message}")
    intake = ctx.settings.intake
    try:
        webhook = webhook_for_event(
            document,
            body,
            api_key=api_key,
            webhook_id=request.headers.get("X-Webhook-Id"),
            attempt=attempt_number(request.headers.get("X-Webhook-Attempt")),
            received_at=utcnow(),
            rules=IntakeRules.from_settings(intake),
        )
    except InvalidEvent as error:
        return _error(400, str(error))
    event_type = webhook.event_type
    bind_log_context(call_cid=webhook.call_cid)

    try:
        with ctx.db.transaction() as session:
            stored = store_webhook(
                session, webhook, timedelta(seconds=intake.dedupe_window_seconds)
            )
    except SQLAlchemyError as error:
        if isinstance(error, DatabaseUnavailable):  # failing fast: one line, no traceback
            log.warning("could not store webhook %s: %s", webhook.webhook_id, error)
            return _error(503, "storage unavailable, retry later", event_type)
        if is_transient_db_error(error):
            log.exception("could not store webhook %s", webhook.webhook_id)
            return _error(503, "storage unavailable, retry later", event_type)
        # The same statement would fail on every retry: not an outage, and not Stream's to
        # retry.  Nothing the receiver reads should get here (it is sanitised first).
        log.exception("webhook %s refused by the database", webhook.webhook_id)
        return _error(400, f"the event cannot be stored: {type(error).__name__}", event_type)

    bind_log_context(event_id=stored.event_id)
    if stored.duplicate:
        if stored.replayed_body:
            log.warning(
                "webhook %s repeats the body of event %s under another X-Webhook-Id: "
                "not processed again",
                webhook.webhook_id,
                stored.event_id,
            )
        metrics.record_webhook(event_type, "duplicate")
        return (jsonify(status="duplicate", event_id=stored.event_id), 200), "duplicate"
    if stored.status == EventStatus.RECEIVED:
        # Committed already: when the broker fails or its circuit is open, the event waits in
        # the inbox and is queued the moment the broker answers again (or by the sweeper).
        ctx.celery.handoff.queue_event_guarded(ctx.publisher, stored.event_id, event_type)
        metrics.record_webhook(event_type, "accepted")
        return (jsonify(status="accepted", event_id=stored.event_id), 202), "accepted"
    if stored.status == EventStatus.FAILED:
        log.warning("event %s (%s) failed: %s", stored.event_id, event_type, webhook.status_reason)
    elif is_stale_reason(webhook.status_reason):
        # A replayed capture, a webhook held up for minutes, or this host's clock running fast.
        log.warning(
            "event %s (%s) not pushed: %s", stored.event_id, event_type, webhook.status_reason
        )
    # ignored (no push for the type, or stale), processed (a ring stopper), or failed (stored,
    # but nothing to act on): a retry would change nothing, so 200.
    metrics.record_webhook(event_type, stored.status)
    answer = jsonify(status=stored.status, event_id=stored.event_id, reason=webhook.status_reason)
    return (answer, 200), str(stored.status)

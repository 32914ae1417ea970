"""POST /webhooks/stream: verify over the raw bytes → parse → store → enqueue → answer.

Stream retries on 408/429/5xx and network errors with the same X-Webhook-Id, for up to ~15 s
(stream-protocol.md §1.4), so: 2xx only once the event is committed to the inbox; 503 when the
database is down (Stream retries); 4xx for requests no retry can fix.
"""

from __future__ import annotations

import json
import logging

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import RequestEntityTooLarge

from webhook_app.app import receiver
from worker import metrics
from worker.logging_setup import bind_log_context, log_context
from worker.storage.inbox import store_webhook
from worker.storage.models import EventStatus
from worker.stream_events import InvalidEvent
from worker.tasks import enqueue_event_guarded
from worker.webhook_intake import webhook_for_event
from worker.webhook_signature import WebhookRejected, verify_webhook

log = logging.getLogger("callpush.webhook")
blueprint = Blueprint("stream_webhook", __name__)


def _error(status: int, message: str, event_type: str | None = None) -> ResponseReturnValue:
    metrics.record_webhook(event_type, str(status))
    return jsonify(error=message), status


@blueprint.post("/webhooks/stream")
def receive_stream_webhook() -> ResponseReturnValue:
    # The call cid and event id are bound as they become known; the block resets them, so the
    # next request on this server thread starts without them.
    with log_context(event_id=None, call_cid=None):
        return _receive()


def _receive() -> ResponseReturnValue:
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
        document = json.loads(body)
    except (ValueError, RecursionError) as error:
        # RecursionError: JSON nested deeper than the parser's limit (~1000 levels).
        message = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        return _error(400, f"malformed event: {message}")
    try:
        webhook = webhook_for_event(
            document,
            body,
            api_key=api_key,
            webhook_id=request.headers.get("X-Webhook-Id"),
            attempt=_attempt(),
        )
    except InvalidEvent as error:
        # The type is a metrics label only once it was read ("malformed <type> event").
        known = not str(error).startswith("malformed event")
        return _error(400, str(error), document.get("type") if known else None)
    event_type = webhook.event_type
    bind_log_context(call_cid=webhook.call_cid)

    try:
        with ctx.db.transaction() as session:
            stored = store_webhook(session, webhook)
    except SQLAlchemyError:
        log.exception("could not store webhook %s", webhook.webhook_id)
        return _error(503, "storage unavailable, retry later", event_type)

    bind_log_context(event_id=stored.event_id)
    if stored.duplicate:
        metrics.record_webhook(event_type, "duplicate")
        return jsonify(status="duplicate", event_id=stored.event_id), 200
    if stored.status == EventStatus.RECEIVED:
        # Committed already: when the broker fails or its circuit is open, the event waits in
        # the inbox and is queued the moment the broker answers again (or by the sweeper).
        enqueue_event_guarded(ctx.celery, ctx.publisher, stored.event_id, event_type)
        metrics.record_webhook(event_type, "accepted")
        return jsonify(status="accepted", event_id=stored.event_id), 202
    metrics.record_webhook(event_type, stored.status)  # ignored, or processed (a ring stopper)
    return jsonify(status=stored.status, event_id=stored.event_id), 200


def _attempt() -> int:
    try:
        return max(1, int(request.headers.get("X-Webhook-Attempt", "1")))
    except ValueError:
        return 1

"""Device receipts: the app tells callpush that a push reached the phone.

    POST /receipts   {"receipt_id": "<the push's callpush_receipt_id>"}

Optional for apps.  Called from the app's PushKit or FCM handler with the user's Stream token
(of the app the push was for: ``?api_key=`` or ``X-Api-Key`` as for /devices), it records
"received by the phone" with the time it arrived, shown by `callpush trace`, the dashboard and
the ``callpush_push_receipts`` / ``callpush_phone_latency_seconds`` metrics.  Another app's push
is 404 and another user's 403; neither records anything.  A repeat is answered 200 with the
first time.  Errors are JSON as for /devices (webhook_app/devices_api.py).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from webhook_app import api_errors
from webhook_app.api_errors import ApiError
from webhook_app.api_models import ReceiptConfirmation, validated
from webhook_app.devices_api import CHALLENGE, authenticate, json_object
from webhook_app.receiver import receiver
from worker.foundation import metrics
from worker.storage.models import utcnow
from worker.storage.receipts import Receipt, ReceiptAnswer, record_receipt

log = logging.getLogger("callpush.api")
blueprint = Blueprint("receipts_api", __name__)
api_errors.register(blueprint, log=log, challenge=CHALLENGE)


@blueprint.post("/receipts")
def post_receipt() -> ResponseReturnValue:
    caller = authenticate()
    if caller.is_server:
        # The receipt is the phone's word: a server saying so would be a guess.
        raise ApiError(403, "a receipt comes from the user's phone: use the user's token")
    assert caller.user_id is not None
    receipt_id = validated(ReceiptConfirmation, json_object()).receipt_id
    with receiver().db.transaction() as session:
        receipt = record_receipt(session, caller.api_key, caller.user_id, receipt_id, utcnow())
    if receipt.answer is ReceiptAnswer.NOT_FOUND:
        raise ApiError(404, "no push of this app carried that receipt_id")
    if receipt.answer is ReceiptAnswer.OTHER_USER:
        log.info("receipt refused: %s confirmed a push sent to another user", caller.user_id)
        raise ApiError(403, "that push was sent to another user")
    assert receipt.platform is not None and receipt.kind is not None
    assert receipt.phone_latency_ms is not None
    if receipt.answer is ReceiptAnswer.RECORDED:
        metrics.record_phone_receipt(receipt.platform, receipt.kind, receipt.phone_latency_ms)
        log.info(
            "push %s of event %s received by %s's phone, +%.0f ms",
            receipt.delivery_id,
            receipt.event_id,
            caller.user_id,
            receipt.phone_latency_ms,
        )
    return jsonify(_receipt_json(receipt_id, receipt))


def _receipt_json(receipt_id: str, receipt: Receipt) -> dict[str, Any]:
    received_at = receipt.phone_received_at
    return {
        "receipt_id": receipt_id,
        "event_id": receipt.event_id,
        "platform": receipt.platform,
        "kind": receipt.kind,
        "received_at": received_at.isoformat().replace("+00:00", "Z") if received_at else None,
        "latency_ms": receipt.phone_latency_ms,
        "duplicate": receipt.answer is ReceiptAnswer.DUPLICATE,
    }

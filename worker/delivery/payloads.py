"""Pure push payload builders: a call event and a device in, a :class:`PushMessage` out.

Key names and value formats are exactly what Stream's own mobile SDKs parse
(stream-protocol.md §3), so an app's existing Stream SDK code handles our pushes unchanged.
No I/O here: payload shape is tested without a network.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from worker.delivery.templates import RenderedText as PushText
from worker.delivery.templates import cap_utf8, default_book
from worker.foundation.apns_topics import voip_topic
from worker.push.base import Platform, ProviderRef, PushKind, PushMessage
from worker.storage.devices import DeviceTarget
from worker.stream.events import (
    LIVE_STARTED,
    MISSED,
    NOTIFICATION,
    RING,
    SESSION_STARTED,
    CallEvent,
)

SENDER = "stream.video"  # Android/Flutter/RN drop pushes without it (§3.2 to §3.5)
VERSION = "v2"
CATEGORY = "stream.video"
APNS_COLLAPSE_ID_MAX_BYTES = 64  # Apple: apns-collapse-id must not exceed 64 bytes
# APNs priority 10 = send now; FCM: 10 -> android.priority "high", 5 -> "normal".
HIGH_PRIORITY = 10
NORMAL_PRIORITY = 5
# Display names come from call.custom / user.name, unbounded; with the template caps
# (worker/delivery/templates.py: title 256, body 1024, each sent twice on iOS) this keeps every
# payload far below APNs' 4096-byte alert / 5120-byte VoIP limits and FCM's 4096-byte data limit.
DISPLAY_NAME_MAX_BYTES = 256
# The id the app sends back to POST /receipts when the push reaches the phone.  Top level in an
# APNs body (beside ``aps`` and ``stream``), one more key in FCM data; never inside ``stream``.
# No Stream SDK reads it or iterates over the keys it does not know, so no parser changes: the
# reasoning per SDK is in docs/sdk-payloads.md §5.
RECEIPT_ID_KEY = "callpush_receipt_id"


def stream_fields(event: CallEvent, push_type: str, receiver_id: str) -> dict[str, str]:
    """The key set every Stream SDK reads (§3.1).  All values are strings: FCM data values must
    be, and RN iOS compares ``video`` as an NSString (§3.5)."""
    fields = {
        "sender": SENDER,
        "type": push_type,
        "version": VERSION,
        "call_cid": event.call_cid,
        "call_display_name": cap_utf8(event.call_name, DISPLAY_NAME_MAX_BYTES),
        "created_by_id": event.created_by_id,
        "created_by_display_name": cap_utf8(event.created_by_name, DISPLAY_NAME_MAX_BYTES),
        "receiver_id": receiver_id,
    }
    if push_type == RING:
        fields["video"] = "true" if event.video else "false"
    return fields


def with_receipt_id(payload: dict[str, Any], receipt_id: str | None) -> dict[str, Any]:
    """``payload`` with the receipt id added at its top level (a string, as FCM data values
    must be); unchanged without one (a delivery claimed before receipts existed)."""
    if receipt_id is not None:
        payload[RECEIPT_ID_KEY] = receipt_id
    return payload


def message_id(event_id: int, device_id: int) -> str:
    """A stable id per (event, device), sent as apns-id so a resend is recognisable."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"callpush:{event_id}:{device_id}"))


def collapse_id(call_cid: str) -> str:
    key = f"video-{call_cid}"
    if len(key.encode()) <= APNS_COLLAPSE_ID_MAX_BYTES:
        return key
    return "video-" + hashlib.sha256(call_cid.encode()).hexdigest()[:48]


# How long APNs/FCM may hold a non-ring push for an offline phone: a missed call stays news for
# a day, "a call is starting" for minutes.
ALERT_TIME_TO_LIVE = {
    NOTIFICATION: 600,
    MISSED: 86_400,
    SESSION_STARTED: 600,
    LIVE_STARTED: 600,
}


def apns_body(event: CallEvent, push_type: str, receiver_id: str, text: PushText) -> dict[str, Any]:
    """The APNs JSON body of Stream's examples (§3.6): ``aps`` for the system, and the ``stream``
    dict the SDKs read, with the rendered title and body in both."""
    return {
        "aps": {
            "alert": {"title": text.title, "body": text.body},
            "category": CATEGORY,
            "mutable-content": 1,
            "sound": "default",
            "thread-id": f"video-{event.call_cid}",
        },
        "stream": stream_fields(event, push_type, receiver_id)
        | {"title": text.title, "body": text.body},
    }


def apns_alert(
    event: CallEvent,
    device: DeviceTarget,
    text: PushText,
    *,
    bundle_id: str,
    event_id: int,
    provider: ProviderRef | None = None,
    receipt_id: str | None = None,
) -> PushMessage:
    """A regular alert (never VoIP: a VoIP push must report a call to CallKit, §3.3, §3.6).
    Shape of Stream's documented missed-call payload (§3.6)."""
    return PushMessage(
        platform=Platform.APNS,
        kind=PushKind.ALERT,
        token=device.token,
        payload=with_receipt_id(apns_body(event, event.type, device.user_id, text), receipt_id),
        topic=device.app_id or bundle_id or None,
        priority=HIGH_PRIORITY,
        time_to_live=ALERT_TIME_TO_LIVE.get(event.type, 600),
        # A resent alert replaces the first on the lock screen instead of showing twice.
        collapse_id=collapse_id(f"{event.type}:{event.call_cid}"),
        message_id=message_id(event_id, device.device_id),
        provider=provider,
    )


def fcm_data(
    event: CallEvent,
    device: DeviceTarget,
    text: PushText,
    *,
    event_id: int,
    high_priority: bool = True,
    provider: ProviderRef | None = None,
    receipt_id: str | None = None,
) -> PushMessage:
    """Data message with the same keys (§3.6); Android's SDK builds its own notification, and
    ``title``/``body`` are there for apps that render it themselves (React Native).

    ``high_priority`` only for what the app shows: Firebase lowers the priority of an app whose
    high-priority messages end in no visible notification, rings included
    (https://firebase.google.com/docs/cloud-messaging/android/message-priority)."""
    data = stream_fields(event, event.type, device.user_id) | {
        "title": text.title,
        "body": text.body,
    }
    return PushMessage(
        platform=Platform.FCM,
        kind=PushKind.DATA,
        token=device.token,
        payload=with_receipt_id(data, receipt_id),
        priority=HIGH_PRIORITY if high_priority else NORMAL_PRIORITY,
        time_to_live=ALERT_TIME_TO_LIVE.get(event.type, 600),
        message_id=message_id(event_id, device.device_id),
        provider=provider,
    )


def apns_voip_ring(
    event: CallEvent,
    device: DeviceTarget,
    *,
    bundle_id: str,
    time_to_live: int,
    event_id: int,
    text: PushText | None = None,
    provider: ProviderRef | None = None,
    receipt_id: str | None = None,
) -> PushMessage:
    """PushKit VoIP push for CallKit (§3.3, §3.6): the SDK reads the ``stream`` dict; ``aps``
    carries the alert some apps show when CallKit is unavailable.  ``text`` is the receiver's
    rendered call.ring template (``TemplateBook.render``); None = the built-in wording."""
    if text is None:
        text = default_book().render(event, device.user_id)
    payload = apns_body(event, RING, device.user_id, text)
    payload["aps"]["badge"] = 0  # as in Stream's ring example (§3.6)
    with_receipt_id(payload, receipt_id)
    bundle = device.app_id or bundle_id
    return PushMessage(
        platform=Platform.APNS,
        kind=PushKind.VOIP,
        token=device.token,
        payload=payload,
        # Apple: the VoIP topic is <bundle id>.voip.  No bundle id: the console provider.
        topic=voip_topic(bundle) if bundle else None,
        priority=HIGH_PRIORITY,
        time_to_live=time_to_live,
        collapse_id=collapse_id(event.call_cid),
        message_id=message_id(event_id, device.device_id),
        provider=provider,
    )


def apns_alert_ring(
    event: CallEvent,
    device: DeviceTarget,
    *,
    bundle_id: str,
    time_to_live: int,
    event_id: int,
    text: PushText | None = None,
    provider: ProviderRef | None = None,
    receipt_id: str | None = None,
) -> PushMessage:
    """call.ring as a time-sensitive alert to a regular APNs token, for an iPhone that has no
    VoIP token (an app that rings without CallKit: Stream documents "regular push notifications
    for ringing" on iOS, https://getstream.io/video/docs/ios/advanced/incoming-calls/overview/).

    The ``stream`` dict is the VoIP ring's (type call.ring, ``video``), so the app's tap handler
    joins the call.  ``interruption-level: time-sensitive`` lets it through a Focus and lights up
    the screen (https://developer.apple.com/documentation/usernotifications/generating-a-remote-notification);
    it expires with the ring, and a resend replaces it instead of showing twice."""
    if text is None:
        text = default_book().render(event, device.user_id)
    payload = apns_body(event, RING, device.user_id, text)
    payload["aps"]["interruption-level"] = "time-sensitive"
    with_receipt_id(payload, receipt_id)
    return PushMessage(
        platform=Platform.APNS,
        kind=PushKind.ALERT,
        token=device.token,
        payload=payload,
        topic=device.app_id or bundle_id or None,
        priority=HIGH_PRIORITY,
        time_to_live=time_to_live,
        collapse_id=collapse_id(f"{RING}:{event.call_cid}"),
        message_id=message_id(event_id, device.device_id),
        provider=provider,
    )


def fcm_ring(
    event: CallEvent,
    device: DeviceTarget,
    *,
    time_to_live: int,
    event_id: int,
    provider: ProviderRef | None = None,
    receipt_id: str | None = None,
) -> PushMessage:
    """Data-only, high-priority FCM message (§3.2, §3.6): Stream's Android SDK reads
    ``RemoteMessage.data`` and never a ``notification`` block."""
    return PushMessage(
        platform=Platform.FCM,
        kind=PushKind.DATA,
        token=device.token,
        payload=with_receipt_id(stream_fields(event, RING, device.user_id), receipt_id),
        priority=HIGH_PRIORITY,  # always: it rings (Stream's SDKs show an incoming call)
        time_to_live=time_to_live,
        collapse_id=None,  # a collapse key would make FCM treat it as collapsible, not urgent
        message_id=message_id(event_id, device.device_id),
        provider=provider,
    )

"""Pure push payload builders: a call event and a device in, a :class:`PushMessage` out.

Key names and value formats are exactly what Stream's own mobile SDKs parse
(stream-protocol.md §3), so an app's existing Stream SDK code handles our pushes unchanged.
No I/O here: payload shape is tested without a network.
"""

from __future__ import annotations

import hashlib
import uuid

from worker.push.base import Platform, PushKind, PushMessage
from worker.storage.devices import DeviceTarget
from worker.stream_events import RING, CallEvent

SENDER = "stream.video"  # Android/Flutter/RN drop pushes without it (§3.2 to §3.5)
VERSION = "v2"
CATEGORY = "stream.video"
APNS_COLLAPSE_ID_MAX_BYTES = 64  # Apple: apns-collapse-id must not exceed 64 bytes


def stream_fields(event: CallEvent, push_type: str, receiver_id: str) -> dict[str, str]:
    """The key set every Stream SDK reads (§3.1).  All values are strings: FCM data values must
    be, and RN iOS compares ``video`` as an NSString (§3.5)."""
    fields = {
        "sender": SENDER,
        "type": push_type,
        "version": VERSION,
        "call_cid": event.call_cid,
        "call_display_name": event.call_name,
        "created_by_id": event.created_by_id,
        "created_by_display_name": event.created_by_name,
        "receiver_id": receiver_id,
    }
    if push_type == RING:
        fields["video"] = "true" if event.video else "false"
    return fields


def ring_title(event: CallEvent) -> str:
    # Stream's wording in its iOS example payload (§3.6): "<caller> is calling you".
    caller = event.actor_name or event.created_by_name or "Someone"
    return f"{caller} is calling you"


def message_id(event_id: int, device_id: int) -> str:
    """A stable id per (event, device), sent as apns-id so a resend is recognisable."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"callpush:{event_id}:{device_id}"))


def collapse_id(call_cid: str) -> str:
    key = f"video-{call_cid}"
    if len(key.encode()) <= APNS_COLLAPSE_ID_MAX_BYTES:
        return key
    return "video-" + hashlib.sha256(call_cid.encode()).hexdigest()[:48]


def apns_voip_ring(
    event: CallEvent,
    device: DeviceTarget,
    *,
    bundle_id: str,
    time_to_live: int,
    event_id: int,
) -> PushMessage:
    """PushKit VoIP push for CallKit (§3.3, §3.6): the SDK reads the ``stream`` dict; ``aps``
    carries the alert some apps show when CallKit is unavailable."""
    title = ring_title(event)
    stream = stream_fields(event, RING, device.user_id) | {"title": title, "body": ""}
    payload = {
        "aps": {
            "alert": {"title": title, "body": ""},
            "badge": 0,
            "category": CATEGORY,
            "mutable-content": 1,
            "sound": "default",
            "thread-id": f"video-{event.call_cid}",
        },
        "stream": stream,
    }
    return PushMessage(
        platform=Platform.APNS,
        kind=PushKind.VOIP,
        token=device.token,
        payload=payload,
        topic=f"{device.app_id or bundle_id}.voip",  # Apple: VoIP topic is <bundle id>.voip
        priority=10,
        time_to_live=time_to_live,
        collapse_id=collapse_id(event.call_cid),
        message_id=message_id(event_id, device.device_id),
    )


def fcm_ring(
    event: CallEvent, device: DeviceTarget, *, time_to_live: int, event_id: int
) -> PushMessage:
    """Data-only, high-priority FCM message (§3.2, §3.6): Stream's Android SDK reads
    ``RemoteMessage.data`` and never a ``notification`` block."""
    return PushMessage(
        platform=Platform.FCM,
        kind=PushKind.DATA,
        token=device.token,
        payload=stream_fields(event, RING, device.user_id),
        priority=10,
        time_to_live=time_to_live,
        collapse_id=None,  # a collapse key would make FCM treat it as collapsible, not urgent
        message_id=message_id(event_id, device.device_id),
    )

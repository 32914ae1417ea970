"""Payload shape, without a network: the keys Stream's SDKs parse (stream-protocol.md §3)."""

from worker.delivery import payloads
from worker.push.base import Platform, ProviderRef, PushKind
from worker.storage.devices import DeviceTarget
from worker.stream import samples as sample_events
from worker.stream.events import parse_call_event

STREAM_KEYS = {
    "sender",
    "type",
    "version",
    "call_cid",
    "call_display_name",
    "created_by_id",
    "created_by_display_name",
    "receiver_id",
    "video",
}
IOS = DeviceTarget(7, "bob", Platform.APNS, "a" * 64, True, None)
ANDROID = DeviceTarget(8, "bob", Platform.FCM, "fcm-token", False, None)


def _ring(video=True):
    return parse_call_event(sample_events.ring_event("alice", ["bob"], video=video))


def test_voip_ring_payload():
    event = _ring()
    message = payloads.apns_voip_ring(
        event, IOS, bundle_id="com.example.app", time_to_live=30, event_id=1
    )
    assert message.kind is PushKind.VOIP and message.platform is Platform.APNS
    assert message.topic == "com.example.app.voip"
    assert message.priority == 10 and message.time_to_live == 30
    stream = message.payload["stream"]
    assert set(stream) >= STREAM_KEYS
    assert stream["sender"] == "stream.video" and stream["type"] == "call.ring"
    assert stream["version"] == "v2"
    assert stream["call_cid"] == event.call_cid
    assert stream["created_by_id"] == "alice" and stream["created_by_display_name"] == "Alice"
    assert stream["receiver_id"] == "bob"
    assert stream["video"] == "true"  # a string: RN iOS compares it as NSString
    assert stream["title"] == "Alice is calling you"
    aps = message.payload["aps"]
    assert aps["category"] == "stream.video" and aps["mutable-content"] == 1
    assert aps["thread-id"] == f"video-{event.call_cid}"


def test_device_app_id_overrides_the_bundle():
    device = DeviceTarget(9, "bob", Platform.APNS, "b" * 64, True, "com.other.app")
    message = payloads.apns_voip_ring(
        _ring(), device, bundle_id="com.example.app", time_to_live=5, event_id=1
    )
    assert message.topic == "com.other.app.voip"


def test_fcm_ring_is_data_only_with_string_values():
    message = payloads.fcm_ring(_ring(video=False), ANDROID, time_to_live=30, event_id=1)
    assert message.kind is PushKind.DATA
    assert set(message.payload) == STREAM_KEYS
    assert all(isinstance(v, str) for v in message.payload.values())
    assert message.payload["video"] == "false"
    assert message.priority == 10


def test_message_ids_are_stable_per_event_and_device():
    assert payloads.message_id(1, 7) == payloads.message_id(1, 7)
    assert payloads.message_id(1, 7) != payloads.message_id(2, 7)


def test_collapse_id_fits_apns_limit():
    long_cid = "default:" + "x" * 200
    assert len(payloads.collapse_id(long_cid).encode()) <= 64


def test_alert_for_a_missed_call_matches_streams_documented_payload():
    """stream-protocol.md §3.6, the React Native docs' missed-call example."""
    event = parse_call_event(sample_events.member_event("call.missed", "john_doe", ["artem"]))
    device = DeviceTarget(3, "artem", Platform.APNS, "c" * 64, False, None)
    text = payloads.PushText("Missed call", "You missed a call from John_doe")
    message = payloads.apns_alert(event, device, text, bundle_id="com.example.app", event_id=1)
    assert message.kind is PushKind.ALERT and message.topic == "com.example.app"
    assert message.payload["aps"] == {
        "alert": {"title": "Missed call", "body": "You missed a call from John_doe"},
        "category": "stream.video",
        "mutable-content": 1,
        "sound": "default",
        "thread-id": f"video-{event.call_cid}",
    }
    stream = message.payload["stream"]
    assert stream["type"] == "call.missed" and stream["receiver_id"] == "artem"
    assert stream["title"] == "Missed call" and "video" not in stream
    assert message.time_to_live == 86_400


def test_fcm_data_for_non_ring_events_carries_title_and_body_as_strings():
    event = parse_call_event(sample_events.member_event("call.notification", "alice", ["bob"]))
    message = payloads.fcm_data(event, ANDROID, payloads.PushText("Hi", "there"), event_id=1)
    assert message.kind is PushKind.DATA
    assert message.payload["type"] == "call.notification"
    assert message.payload["title"] == "Hi" and message.payload["body"] == "there"
    assert all(isinstance(v, str) for v in message.payload.values())


def test_fcm_data_priority_is_high_only_when_asked():
    event = parse_call_event(sample_events.member_event("call.session_started", "alice", ["bob"]))
    text = payloads.PushText("t", "b")
    normal = payloads.fcm_data(event, ANDROID, text, event_id=1, high_priority=False)
    high = payloads.fcm_data(event, ANDROID, text, event_id=1)
    assert (normal.priority, high.priority) == (payloads.NORMAL_PRIORITY, payloads.HIGH_PRIORITY)


def test_alert_ring_is_a_time_sensitive_ring_with_the_voip_rings_stream_keys():
    """An iPhone without a VoIP token rings through its regular token (Stream's "regular push
    notifications for ringing"): the same stream dict as the VoIP ring, an alert push type,
    the bundle id itself as topic, the ring's expiration and a collapse id."""
    event = _ring()
    plain = DeviceTarget(10, "bob", Platform.APNS, "d" * 64, False, None)
    ref = ProviderRef(Platform.APNS, "k", "ios-apn")
    alert = payloads.apns_alert_ring(
        event, plain, bundle_id="com.example.app", time_to_live=25, event_id=1, provider=ref
    )
    voip = payloads.apns_voip_ring(
        event, IOS, bundle_id="com.example.app", time_to_live=25, event_id=1
    )
    assert alert.kind is PushKind.ALERT and alert.topic == "com.example.app"
    assert alert.provider == ref
    assert alert.payload["stream"] == voip.payload["stream"] | {"receiver_id": "bob"}
    assert alert.payload["stream"]["type"] == "call.ring" and alert.payload["stream"]["video"]
    aps = alert.payload["aps"]
    assert aps["interruption-level"] == "time-sensitive" and aps["sound"] == "default"
    assert aps["alert"] == {"title": "Alice is calling you", "body": ""}
    assert "badge" not in aps
    assert alert.time_to_live == 25 and alert.priority == 10
    assert alert.collapse_id == f"video-call.ring:{event.call_cid}"
    assert alert.message_id == payloads.message_id(1, 10)


# --- the receipt id (docs/sdk-payloads.md §5) --------------------------------------------------

RECEIPT = "0123456789abcdef0123456789abcdef"


NOTIFIED_TYPES = ("call.notification", "call.missed", "call.session_started", "call.live_started")


def _events():
    ring = _ring()
    others = [
        parse_call_event(sample_events.member_event(event_type, "alice", ["bob"]))
        for event_type in NOTIFIED_TYPES
    ]
    return ring, others


def _every_push_kind(events, receipt_id):
    """Every push callpush sends, built with (or without) a receipt id: VoIP ring, alert ring,
    FCM ring, and the notifications of every other type as alert and FCM data."""
    ring, others = events
    plain_ios = DeviceTarget(9, "bob", Platform.APNS, "c" * 64, False, None)
    text = payloads.default_book().render(ring, "bob")
    built = {
        "voip ring": payloads.apns_voip_ring(
            ring, IOS, bundle_id="b.c", time_to_live=30, event_id=1, receipt_id=receipt_id
        ),
        "alert ring": payloads.apns_alert_ring(
            ring, plain_ios, bundle_id="b.c", time_to_live=30, event_id=1, receipt_id=receipt_id
        ),
        "fcm ring": payloads.fcm_ring(
            ring, ANDROID, time_to_live=30, event_id=1, receipt_id=receipt_id
        ),
    }
    for event in others:
        event_type = event.type
        built[f"{event_type} alert"] = payloads.apns_alert(
            event, plain_ios, text, bundle_id="b.c", event_id=2, receipt_id=receipt_id
        )
        built[f"{event_type} fcm"] = payloads.fcm_data(
            event, ANDROID, text, event_id=2, receipt_id=receipt_id
        )
    return built


def test_every_push_kind_carries_the_receipt_id_beside_what_the_sdks_read():
    events = _events()
    with_receipt = _every_push_kind(events, RECEIPT)
    without = _every_push_kind(events, None)
    assert len(with_receipt) == 11
    for name, message in with_receipt.items():
        payload = message.payload
        # A string (FCM data values must be; Flutter casts `as String?`), at the top level.
        assert payload[payloads.RECEIPT_ID_KEY] == RECEIPT, name
        # Nothing else changes: every key an SDK reads keeps its place, type and value.
        plain = without[name].payload
        assert payloads.RECEIPT_ID_KEY not in plain, name
        assert {k: v for k, v in payload.items() if k != payloads.RECEIPT_ID_KEY} == plain, name
        if message.platform is Platform.APNS:
            # Not inside `stream` (the dict every iOS parser reads, RN as NSStrings) nor `aps`.
            assert set(payload) == {"aps", "stream", payloads.RECEIPT_ID_KEY}, name
            assert payloads.RECEIPT_ID_KEY not in payload["stream"], name
        else:
            assert all(isinstance(v, str) for v in payload.values()), name
            assert set(payload) >= STREAM_KEYS - {"video"}, name


def test_the_receipt_key_is_no_key_any_sdk_or_fcm_reserves():
    # Stream's SDKs read these (docs/sdk-payloads.md §1) and FCM reserves "from",
    # "notification", "message_type" and the google / gcm prefixes
    # (https://firebase.google.com/docs/cloud-messaging/concept-options#data_messages).
    read_by_sdks = STREAM_KEYS | {"aps", "stream", "title", "body"}
    key = payloads.RECEIPT_ID_KEY
    assert key not in read_by_sdks | {"from", "notification", "message_type"}
    assert not key.startswith(("google", "gcm"))

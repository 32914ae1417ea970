from datetime import UTC, datetime

import pytest

from worker import sample_events
from worker.stream_events import InvalidEvent, parse_call_event, parse_timestamp

EPOCH_2026_05_08 = datetime(2026, 5, 8, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [
        1778198400000000000,  # Unix ns, as in the SDK fixtures
        "1778198400000000000",
        1778198400000,  # ms
        1778198400,  # s
        "2026-05-08T00:00:00Z",
        "2026-05-08T00:00:00.000000000Z",  # nanosecond fraction, as the API sends
        "2026-05-08T02:00:00+02:00",
    ],
)
def test_both_timestamp_forms(value):
    assert parse_timestamp(value) == EPOCH_2026_05_08


def test_nanosecond_fraction_keeps_microseconds():
    parsed = parse_timestamp("2024-10-16T04:15:01.911604755Z")
    assert parsed == datetime(2024, 10, 16, 4, 15, 1, 911604, tzinfo=UTC)


@pytest.mark.parametrize("value", ["yesterday", True, [], {}, "2026-13-45T00:00:00Z", 10**30])
def test_bad_timestamps_are_invalid(value):
    with pytest.raises(InvalidEvent):
        parse_timestamp(value)


def test_ring_event_fields():
    body = sample_events.ring_event("alice", ["bob", "carol"], video=False, display_name="Standup")
    body["call"]["settings"]["ring"] = {
        "incoming_call_timeout_ms": 20000,
        "auto_cancel_timeout_ms": 15000,
    }
    body["call"]["session"]["accepted_by"] = {"carol": "2026-01-01T00:00:00Z"}
    event = parse_call_event(body)
    assert event.type == "call.ring"
    assert event.call_cid == body["call_cid"]
    assert event.actor_id == "alice" and event.created_by_id == "alice"
    assert event.created_by_name == "Alice"
    assert event.call_name == "Standup"
    assert event.video is False
    assert [m.user_id for m in event.members] == ["bob", "carol"]
    assert event.accepted_by == {"carol"}
    assert event.ring_timeout_ms == 15000  # the shorter of the two


def test_call_display_name_falls_back_through_custom_fields():
    body = sample_events.ring_event("alice", ["bob"])
    body["call"]["custom"] = {"name": "", "title": "Weekly"}
    assert parse_call_event(body).call_name == "Weekly"
    body["call"]["custom"] = {}
    assert parse_call_event(body).call_name == ""


def test_event_without_call_cid_is_invalid():
    with pytest.raises(InvalidEvent):
        parse_call_event({"type": "call.ring", "created_at": 1})

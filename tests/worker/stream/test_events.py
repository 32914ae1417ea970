from datetime import UTC, datetime, timedelta, timezone

import pytest

from worker.stream import samples as sample_events
from worker.stream.events import InvalidEvent, parse_call_event, parse_timestamp, read_call_fields

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


# --- RFC 3339 with fractions and offsets (a fresh ring was recorded expired) ------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # A fraction and a numeric offset: the offset used to be read as more digits and lost.
        ("2026-05-08T01:55:20.123456-05:00", datetime(2026, 5, 8, 6, 55, 20, 123456, tzinfo=UTC)),
        ("2026-05-08T01:55:20.123456+02:00", datetime(2026, 5, 7, 23, 55, 20, 123456, tzinfo=UTC)),
        # Nanoseconds, as Stream sends them: cut to microseconds, the offset kept.
        (
            "2026-05-08T01:55:20.123456789-05:00",
            datetime(2026, 5, 8, 6, 55, 20, 123456, tzinfo=UTC),
        ),
        (
            "2026-05-08T01:55:20.911604755+05:30",
            datetime(2026, 5, 7, 20, 25, 20, 911604, tzinfo=UTC),
        ),
        ("2026-05-08T01:55:20.5Z", datetime(2026, 5, 8, 1, 55, 20, 500000, tzinfo=UTC)),
        ("2026-05-08t01:55:20.1z", datetime(2026, 5, 8, 1, 55, 20, 100000, tzinfo=UTC)),
        ("2026-05-08T01:55:20-05:00", datetime(2026, 5, 8, 6, 55, 20, tzinfo=UTC)),
        ("2026-05-08T01:55:20.123456", datetime(2026, 5, 8, 1, 55, 20, 123456, tzinfo=UTC)),
    ],
)
def test_fractional_seconds_keep_their_offset(value, expected):
    assert parse_timestamp(value) == expected


def test_a_fresh_ring_in_a_local_offset_is_fresh_and_an_old_one_old():
    now = datetime.now(UTC).replace(microsecond=123456)
    fresh = now.astimezone(timezone(timedelta(hours=-5))).isoformat(timespec="microseconds")
    old = (now - timedelta(minutes=2)).astimezone(timezone(timedelta(hours=2)))
    assert abs(parse_timestamp(fresh) - now) < timedelta(milliseconds=1)
    assert parse_timestamp(old.isoformat(timespec="microseconds")) == now - timedelta(minutes=2)


# --- out-of-range and odd values: InvalidEvent, never another exception ------------------------


@pytest.mark.parametrize(
    "value",
    [
        10**400,  # above what a float holds: float() raised OverflowError
        -(10**400),
        str(10**400),
        10**29 * 7,
        1e308,
        float("inf"),
        float("nan"),
        "²",  # str.isdigit() is true and int() refuses it
        "١٧٧٨١٩٨٤٠٠",  # int() takes Arabic-Indic digits; no timestamp uses them
        "1778198400\x00",
        "0001-01-01T00:00:00+01:00",  # year 0 in UTC
        "9999-12-31T23:59:59-01:00",  # year 10000 in UTC
        "2026-05-08T01:55:20.123-25:00",
        "2026-02-30T00:00:00Z",
        "2026-05-08T01:55:20.\ud800Z",
        "x" * 5000,
    ],
)
def test_out_of_range_timestamps_are_invalid_events(value):
    with pytest.raises(InvalidEvent):
        parse_timestamp(value)


def test_the_extreme_valid_years_parse():
    assert parse_timestamp("0001-01-01T00:00:00Z") == datetime(1, 1, 1, tzinfo=UTC)
    assert parse_timestamp("9999-12-31T23:59:59+00:00") == datetime(
        9999, 12, 31, 23, 59, 59, tzinfo=UTC
    )


@pytest.mark.parametrize("value", [10**20, 2**31, 2**63])
def test_ring_timeouts_beyond_streams_int32_are_clamped(value):
    body = sample_events.ring_event("alice", ["bob"])
    body["call"]["settings"]["ring"] = {"incoming_call_timeout_ms": value}
    assert parse_call_event(body).ring_timeout_ms == 2**31 - 1


def test_a_call_cid_longer_than_its_column_is_invalid():
    body = sample_events.ring_event("alice", ["bob"])
    body["call_cid"] = "default:" + "x" * 300
    with pytest.raises(InvalidEvent, match="'call_cid' is longer than 255"):
        parse_call_event(body)
    assert read_call_fields(body).call_cid is None


def test_long_session_ids_are_cut_alike_wherever_they_are_read():
    body = sample_events.ring_event("alice", ["bob"])
    body["session_id"] = "s" * 1000
    assert parse_call_event(body).session_id == "s" * 128
    assert read_call_fields(body).session_id == "s" * 128


def test_nul_and_lone_surrogates_never_reach_a_stored_string():
    body = sample_events.ring_event("alice", ["bob\x00", "carol\ud800", "d" * 256, "dave"])
    body["session_id"] = "sess\x00ion"
    event = parse_call_event(body)
    assert [m.user_id for m in event.members] == ["bob\ufffd", "carol\ufffd", "dave"]
    assert event.session_id == "sess\ufffdion"
    body["call_cid"] = "default:\x00"
    with pytest.raises(InvalidEvent):
        parse_call_event(body)


def test_read_call_fields_reads_what_it_can_of_an_unusable_event():
    fields = read_call_fields({"type": "call.ring", "call_cid": "default:c1", "created_at": "²"})
    assert (fields.call_cid, fields.session_id, fields.created_at) == ("default:c1", None, None)
    fields = read_call_fields({"type": "call.session_started", "created_at": 1778198400000000000})
    assert fields.call_cid is None and fields.created_at == EPOCH_2026_05_08

"""The rules that turn a verified Stream event into an inbox row (worker.intake.webhooks), shared
by the receiver and `callpush events import`: pure functions, no database."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from worker.intake.webhooks import (
    MAX_ATTEMPT,
    IntakeRules,
    attempt_number,
    load_event_json,
    webhook_for_event,
)
from worker.stream import samples as sample_events
from worker.stream.events import InvalidEvent

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
RULES = IntakeRules(max_event_age=timedelta(minutes=5))
# Stream's own SDK test fixture, byte for byte: GetStream/stream-py
# tests/assets/webhooks/call.session_started/body.json (no call_cid, no call).
SDK_SESSION_STARTED = b'{"type":"call.session_started","created_at":1778198400000000000}'


def row_for(event: dict, *, rules: IntakeRules = RULES, webhook_id: str | None = "wh-1"):
    body = json.dumps(event).encode()
    return webhook_for_event(
        load_event_json(body.decode()),
        body,
        api_key="k",
        webhook_id=webhook_id,
        received_at=NOW,
        rules=rules,
    )


def created(minutes_ago: float) -> int:
    return int((NOW - timedelta(minutes=minutes_ago)).timestamp() * 1e9)


def test_a_fresh_ring_is_received_with_its_call_fields():
    event = sample_events.ring_event("alice", ["bob"]) | {"created_at": created(0.1)}
    row = row_for(event)
    assert (row.status, row.status_reason) == ("received", None)
    assert row.call_cid == event["call_cid"] and row.session_id == event["session_id"]
    assert row.event_created_at == NOW - timedelta(minutes=0.1)
    assert row.received_at == NOW and row.webhook_id == "wh-1"
    assert len(row.body_digest or "") == 64


def test_the_sdk_fixture_without_a_call_is_stored_failed_not_refused():
    document = load_event_json(SDK_SESSION_STARTED.decode())
    row = webhook_for_event(
        document, SDK_SESSION_STARTED, api_key="k", webhook_id=None, received_at=NOW, rules=RULES
    )
    assert row.status == "failed"
    assert row.status_reason == (
        "cannot act on this call.session_started event: the event has no valid 'call_cid'"
    )
    assert row.event_type == "call.session_started" and row.call_cid is None
    assert row.event_created_at == datetime(2026, 5, 8, tzinfo=UTC)
    assert row.body == SDK_SESSION_STARTED.decode()


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda e: e.pop("call_cid") and e.pop("call"), "no valid 'call_cid'"),
        (lambda e: e.update(call_cid="default:" + "x" * 300), "longer than 255"),
        (lambda e: e.update(created_at="²"), "not an RFC 3339 timestamp"),
        (lambda e: e.update(created_at=10**400), "out of range"),
        (lambda e: e.update(created_at="0001-01-01T00:00:00+01:00"), "not a valid time"),
    ],
)
def test_push_events_that_cannot_be_acted_on_are_stored_failed(mutate, why):
    event = sample_events.member_event("call.missed", "alice", ["bob"])
    mutate(event)
    row = row_for(event)
    assert row.status == "failed" and why in (row.status_reason or "")
    assert row.status_reason.startswith("cannot act on this call.missed event: ")


def test_a_ring_stopper_without_a_call_is_failed_and_other_types_ignored():
    assert row_for({"type": "call.accepted", "user": {"id": "bob"}}).status == "failed"
    stopper = row_for(sample_events.call_event("call.ended", "default:c1"))
    assert stopper.status == "processed"
    assert row_for({"type": "call.updated", "created_at": "yesterday"}).status == "ignored"


@pytest.mark.parametrize("event_type", ["call.ring", "call.missed", "call.notification"])
def test_a_push_event_older_than_the_maximum_age_is_ignored_as_stale(event_type):
    event = sample_events.member_event(event_type, "alice", ["bob"]) | {"created_at": created(6)}
    row = row_for(event)
    assert row.status == "ignored"
    assert row.status_reason == (
        "stale: created 6m before it arrived (more than intake.max_event_age_seconds = 300); "
        "not pushed (replay with --allow-stale to push it)"
    )
    week = row_for(event | {"created_at": created(7 * 24 * 60 + 90)})
    assert week.status_reason.startswith("stale: created 7d 1h before it arrived")


def test_an_event_at_the_maximum_age_or_from_the_future_is_pushed():
    event = sample_events.member_event("call.missed", "alice", ["bob"])
    assert row_for(event | {"created_at": created(5)}).status == "received"
    assert row_for(event | {"created_at": created(-60)}).status == "received"  # clock skew
    assert row_for(event | {"created_at": None}).status == "received"


def test_allow_stale_lets_an_operator_import_an_old_event():
    event = sample_events.member_event("call.missed", "alice", ["bob"]) | {
        "created_at": created(60)
    }
    row = row_for(event, rules=IntakeRules(timedelta(minutes=5), allow_stale=True))
    assert row.status == "received" and row.allow_stale


def test_stale_ring_stoppers_still_stop_rings():
    event = sample_events.call_event("call.rejected", "default:c1", "bob")
    assert row_for(event | {"created_at": created(60)}).status == "processed"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "not a JSON object"),
        ({"created_at": 1}, "no 'type'"),
        ({"type": 5}, "no 'type'"),
        ({"type": " "}, "no 'type'"),
        ({"type": "call.\ud800"}, "'type' is not valid Unicode"),
        ({"type": "call.ring\x00"}, "'type' is not valid Unicode"),
    ],
)
def test_only_a_document_without_a_usable_type_is_refused(document, message):
    with pytest.raises(InvalidEvent, match=message):
        webhook_for_event(
            document, b"{}", api_key="k", webhook_id="w", received_at=NOW, rules=RULES
        )


def test_webhook_ids_that_do_not_fit_are_replaced_by_their_digest_never_cut():
    event = {"type": "call.updated"}
    long_a, long_b = "a" * 128 + "-first", "a" * 128 + "-second"
    stored_a = row_for(event, webhook_id=long_a).webhook_id
    stored_b = row_for(event, webhook_id=long_b).webhook_id
    assert stored_a != stored_b  # cut to 128 characters, both were "a" * 128
    assert stored_a.startswith("id-sha256:") and len(stored_a) <= 128
    for odd in ("wh\x00id", "wh id", "wh-é", "\ud800"):
        assert row_for(event, webhook_id=odd).webhook_id.startswith("id-sha256:")
    assert row_for(event, webhook_id="  9a1c-uuid  ").webhook_id == "9a1c-uuid"
    body_digest = row_for(event, webhook_id=None).body_digest
    assert row_for(event, webhook_id="").webhook_id == f"sha256:{body_digest}"


@pytest.mark.parametrize(
    ("header", "attempt"),
    [
        (None, 1),
        ("", 1),
        ("3", 3),
        (" 2 ", 2),
        ("0", 1),
        ("-4", 1),
        ("²", 1),  # int() refuses it, str.isdigit() accepts it
        ("١٢", 1),  # int() accepts Arabic-Indic digits
        (str(2**31), MAX_ATTEMPT),  # the column is a 32-bit integer
        ("9" * 20, MAX_ATTEMPT),
        ("9" * 5000, 1),
        ("1e3", 1),
    ],
)
def test_the_attempt_header_is_a_plain_number_within_the_column(header, attempt):
    assert attempt_number(header) == attempt


@pytest.mark.parametrize("text", ['{"type":"call.ring","x":NaN}', '{"type":Infinity}', "-Infinity"])
def test_nan_and_infinity_are_not_json(text):
    with pytest.raises(ValueError, match="is not JSON"):
        load_event_json(text)


def test_every_queued_type_has_a_handler_and_every_handler_is_queued():
    """Intake decides what is queued without importing delivery; the two lists stay one."""
    from worker.delivery.event_processing import HANDLERS
    from worker.intake.webhooks import PROCESSED_TYPES

    assert set(HANDLERS) == PROCESSED_TYPES

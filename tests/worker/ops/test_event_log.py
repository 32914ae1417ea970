"""The event log's read side (worker.ops.event_log) on a real database: filters, an event's detail,
a call's timeline, push counts, device lookup, and the time arguments.  Runs on SQLite and on
PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.ops_data import API_KEY, NOW, Seeder, notification_body, ring_body, stop_body
from worker.ops import event_log
from worker.push.base import PushKind, PushOutcome, PushResult
from worker.storage import deliveries, devices
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head

BOB_VOIP = "b0b0" * 16
BOB_FCM = "bob-fcm-" + "x" * 40
CAROL_FCM = "carol-fcm-" + "y" * 40


@pytest.fixture
def world(database_url):
    upgrade_to_head(database_url)
    db = Database(database_url)
    seed = Seeder(db)
    ids = {
        "bob_voip": seed.device("bob", "apns", BOB_VOIP, voip=True),
        "bob_fcm": seed.device("bob", "fcm", BOB_FCM),
        "carol_fcm": seed.device("carol", "fcm", CAROL_FCM),
    }
    t0 = NOW - timedelta(minutes=30)
    ring = seed.event(
        ring_body("default:c1", "alice", ["bob", "carol"]),
        status="failed",
        reason="1 failed, 2 sent",
        received_at=t0,
    )
    seed.delivery(
        ring,
        ids["bob_voip"],
        "sent",
        user_id="bob",
        token_hint="b0b0b0…b0b0",
        created_at=t0 + timedelta(milliseconds=5),
        latency_ms=120.0,
    )
    seed.delivery(
        ring,
        ids["bob_fcm"],
        "failed",
        user_id="bob",
        platform="fcm",
        kind="data",
        token_hint="bob-fc…xxxx",
        reason="INTERNAL",
        status_code=500,
        created_at=t0 + timedelta(milliseconds=5),
        latency_ms=250.0,
    )
    seed.delivery(
        ring,
        ids["carol_fcm"],
        "sent",
        user_id="carol",
        platform="fcm",
        kind="data",
        token_hint="carol-…yyyy",
        created_at=t0 + timedelta(milliseconds=6),
        latency_ms=90.0,
    )
    accepted = seed.event(
        stop_body("call.accepted", "default:c1", "carol"),
        received_at=t0 + timedelta(seconds=4),
        reason="stops pending ring pushes of the call",
    )
    old = seed.event(
        notification_body("default:c2", "alice", ["bob"]),
        received_at=NOW - timedelta(days=3),
    )
    seed.chunk(old, 0, [("bob", "Bob")])
    seed.delivery(
        old,
        ids["bob_fcm"],
        "sent",
        user_id="bob",
        platform="fcm",
        kind="data",
        created_at=NOW - timedelta(days=3),
    )
    ignored = seed.event(
        {"type": "call.updated", "call_cid": "default:c2"},
        status="ignored",
        received_at=NOW - timedelta(hours=2),
    )
    yield db, {"ring": ring, "accepted": accepted, "old": old, "ignored": ignored, **ids}
    db.dispose()


def test_list_newest_first_with_push_counts(world):
    db, ids = world
    with db.transaction() as session:
        found = event_log.list_events(session)
    assert [e.id for e in found] == sorted(ids[k] for k in ("ring", "accepted", "old", "ignored"))[
        ::-1
    ]
    ring = next(e for e in found if e.id == ids["ring"])
    assert ring.pushes == {"sent": 2, "failed": 1}
    assert ring.status == "failed" and ring.call_cid == "default:c1"


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"status": "failed"}, ["ring"]),
        ({"status": "ignored"}, ["ignored"]),
        ({"event_type": "call.ring"}, ["ring"]),
        ({"call_cid": "default:c1"}, ["accepted", "ring"]),
        ({"since": NOW - timedelta(hours=1)}, ["accepted", "ring"]),
        ({"until": NOW - timedelta(hours=1)}, ["ignored", "old"]),
        ({"since": NOW - timedelta(days=1), "until": NOW - timedelta(hours=1)}, ["ignored"]),
        ({"call_cid": "default:c2", "status": "processed"}, ["old"]),
        ({"limit": 1}, ["ignored"]),  # the newest id (seeded last)
    ],
)
def test_list_filters(world, filters, expected):
    db, ids = world
    with db.transaction() as session:
        found = event_log.list_events(session, **filters)
    assert [e.id for e in found] == [ids[name] for name in expected]


def test_detail_has_recipients_and_each_delivery(world):
    db, ids = world
    with db.transaction() as session:
        detail = event_log.event_detail(session, ids["ring"])
        fanout = event_log.event_detail(session, ids["old"])
        ignored = event_log.event_detail(session, ids["ignored"])
        missing = event_log.event_detail(session, 999_999)
    assert missing is None
    assert detail.recipients == ("bob", "carol")  # members minus the caller
    assert detail.body["type"] == "call.ring"
    assert detail.pushes == {"sent": 2, "failed": 1}
    failed = next(d for d in detail.deliveries if d.status == "failed")
    assert (failed.user_id, failed.platform, failed.reason, failed.status_code) == (
        "bob",
        "fcm",
        "INTERNAL",
        500,
    )
    assert failed.latency_ms == 250.0 and failed.finished_at > failed.created_at
    assert fanout.recipients == ("bob",)  # from the stored chunk
    assert ignored.recipients is None and ignored.deliveries == ()


def test_detail_as_json_never_holds_whole_tokens(world):
    db, ids = world
    with db.transaction() as session:
        document = event_log.as_json(event_log.event_detail(session, ids["ring"]))
    text = str(document)
    assert BOB_VOIP not in text and BOB_FCM not in text and CAROL_FCM not in text
    assert document["received_at"].endswith("Z")
    assert document["pushes"] == {"sent": 2, "failed": 1}
    assert {d["token_hint"] for d in document["deliveries"]} >= {"b0b0b0…b0b0"}


def test_call_trace_is_a_timeline(world):
    db, ids = world
    with db.transaction() as session:
        entries = event_log.call_trace(session, "default:c1")
        nothing = event_log.call_trace(session, "default:none")
    assert nothing == []
    kinds = [(e.kind, e.event_id) for e in entries]
    assert kinds[0] == ("webhook", ids["ring"])
    assert kinds[1] == ("recipients", ids["ring"])
    assert [k for k, _ in kinds].count("push") == 3
    assert kinds[-1] == ("webhook", ids["accepted"])  # 4 s later: after every push
    assert entries == sorted(entries, key=lambda e: e.at)
    recipients = entries[1]
    assert recipients.summary.startswith("3 device(s) of 2 user(s): bob, carol")
    failed = next(e for e in entries if e.kind == "push" and e.status == "failed")
    assert failed.latency_ms == 250.0 and failed.user_id == "bob" and failed.reason == "INTERNAL"
    assert "250 ms" in failed.summary and "bob-fc…xxxx" in failed.summary


def test_call_trace_says_an_unconfirmed_ring_was_not_sent_again(world):
    """What an operator reads for a ring whose answer was lost, recorded the way the ring
    path records it."""
    db, _ = world
    seed = Seeder(db)
    ring = seed.event(ring_body("default:c9", "alice", ["bob"]), received_at=NOW)
    with db.transaction() as session:
        (bob,) = [d for d in devices.active_devices_for(session, API_KEY, ["bob"]) if d.voip]
        claims = deliveries.claim_deliveries(
            session, ring, [(bob, PushKind.VOIP, "apns")], timedelta(seconds=8)
        )
        deliveries.record_outcomes(
            session, [(claims[0], PushOutcome(PushResult.UNCONFIRMED, "timeout"))], NOW
        )
    with db.transaction() as session:
        (push,) = [e for e in event_log.call_trace(session, "default:c9") if e.kind == "push"]
        counts = event_log.push_counts(session, NOW - timedelta(hours=1))
        reach = event_log.event_detail(session, ring).reach
    assert push.status == "unconfirmed"
    # It most likely rang: not "rang nobody", and not counted as reached either.
    assert reach == event_log.Reach(1, 0, 1, "rang nobody for certain (1 of 1 unconfirmed)")
    assert push.summary.startswith(
        "unconfirmed (timeout: answer lost, not re-sent to avoid a second ring) after "
    )
    assert push.summary.endswith("bob apns voip b0b0b0…b0b0")
    assert counts["unconfirmed"] == 1


def test_push_counts_over_the_last_hour(world):
    db, _ = world
    with db.transaction() as session:
        counts = event_log.push_counts(session, NOW - timedelta(hours=1))
    assert counts["sent"] == 2 and counts["failed"] == 1 and counts["expired"] == 0
    assert set(counts) == set(event_log.DELIVERY_STATUSES)


def test_find_devices_redacted_with_last_push(world):
    db, ids = world
    with db.transaction() as session:
        bob = event_log.find_devices(session, "bob")
        everyone = event_log.find_devices(session, None)
        nobody = event_log.find_devices(session, "nobody")
    assert nobody == [] and len(everyone) == 3
    by_id = {d.id: d for d in bob}
    assert set(by_id) == {ids["bob_voip"], ids["bob_fcm"]}
    assert BOB_VOIP not in str(bob) and by_id[ids["bob_voip"]].token_hint == "b0b0b0…b0b0"
    # bob's FCM device: its newest delivery is the failed ring push (the notification is older).
    assert by_id[ids["bob_fcm"]].last_push_status == "failed"
    assert by_id[ids["bob_fcm"]].last_push_event_id == ids["ring"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("1h", 3600), ("1h30m", 5400), ("2d", 172800), ("1w", 604800), ("90s", 90)],
)
def test_parse_duration(text, seconds):
    assert event_log.parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "1x", "h", "0m", "1 h", "-1h", "yesterday"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        event_log.parse_duration(text)


def test_parse_time():
    now = datetime(2024, 5, 2, 12, 0, tzinfo=UTC)
    assert event_log.parse_time("1h", now) == datetime(2024, 5, 2, 11, 0, tzinfo=UTC)
    assert event_log.parse_time("2024-05-01T06:00:00Z") == datetime(2024, 5, 1, 6, tzinfo=UTC)
    assert event_log.parse_time("2024-05-01T08:00:00+02:00") == datetime(2024, 5, 1, 6, tzinfo=UTC)
    assert event_log.parse_time("2024-05-01 06:00") == datetime(2024, 5, 1, 6, tzinfo=UTC)
    assert event_log.parse_time("2024-05-01") == datetime(2024, 5, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="neither a duration"):
        event_log.parse_time("last tuesday")


@pytest.mark.parametrize(
    "text",
    [
        "0001-01-01T00:00:00+14:00",  # before year 1 in UTC
        "9999-12-31T23:59:59-14:00",  # after year 9999 in UTC
        "99999999999w",
        "1" * 5000 + "s",  # more digits than int() takes
    ],
)
def test_parse_time_out_of_range_is_a_value_error(text):
    with pytest.raises(ValueError):
        event_log.parse_time(text)


# --- odd stored bodies --------------------------------------------------------------------------


def store_raw(db: Database, body: str, **fields) -> int:
    """An event whose stored body is exactly ``body`` (the receiver never stores most of these;
    an import or an older version may have)."""
    from worker.storage.models import WebhookEvent

    event_id = Seeder(db).event({"type": "call.ring", "call_cid": "default:odd", **fields})
    with db.transaction() as session:
        session.get(WebhookEvent, event_id).body = body
    return event_id


def test_odd_bodies_are_shown_without_failing(world):
    db, _ = world
    surrogate = store_raw(db, json.dumps(ring_body("default:odd", "alice", ["\ud800"])))
    deep = store_raw(db, "[" * 100_000 + "]" * 100_000)
    nested = store_raw(db, '{"a": ' * 70 + "1" + "}" * 70)
    huge = store_raw(db, '{"type": "call.ring", "x": "' + "y" * (5 * 1024 * 1024) + '"}')
    not_json = store_raw(db, "\x1b[2Jnot json at all")
    with db.transaction() as session:
        details = {
            name: event_log.event_detail(session, event_id)
            for name, event_id in {
                "surrogate": surrogate,
                "deep": deep,
                "nested": nested,
                "huge": huge,
                "not_json": not_json,
            }.items()
        }
    assert details["surrogate"].body["members"][0]["user_id"] == "\ud800"
    assert len(details["surrogate"].recipients) == 1
    assert details["deep"].body.startswith("[[[[")  # too deep to parse: the text
    assert isinstance(details["nested"].body, str)  # parses, but deeper than MAX_BODY_DEPTH
    assert details["huge"].body.endswith(" more characters)")
    assert len(details["huge"].body) < event_log.MAX_BODY_CHARS + 100
    assert details["not_json"].body == "\x1b[2Jnot json at all"
    for detail in details.values():
        shown = event_log.body_text(detail.body, 10_000)
        shown.encode("utf-8")  # a lone surrogate is escaped, never raised
        assert len(shown) < 10_100
    assert '"\\ud800"' in event_log.body_text(details["surrogate"].body, 10_000)


def test_an_id_out_of_the_columns_range_is_no_event(world):
    db, _ = world
    with db.transaction() as session:
        for event_id in (0, -1, 2**63, 10**30):
            assert event_log.event_detail(session, event_id) is None


# --- every recipient accounted for: reach -------------------------------------------------------


def test_reach_counts_the_recipients_a_push_reached(world):
    db, ids = world
    with db.transaction() as session:
        found = {e.id: e for e in event_log.list_events(session)}
        detail = event_log.event_detail(session, ids["ring"])
    assert found[ids["ring"]].reach == detail.reach
    assert (detail.reach.recipients, detail.reach.reached) == (2, 2)
    assert detail.reach.summary == "reached 2 of 2 recipients"
    assert found[ids["old"]].reach.summary == "reached 1 of 1 recipient"
    # Events that push nothing have no reach.
    assert found[ids["ignored"]].reach is None and found[ids["accepted"]].reach is None


def test_a_ring_that_rang_nobody_shows_its_skipped_recipients(world):
    db, _ = world
    seed = Seeder(db)
    ring = seed.event(ring_body("default:c7", "alice", ["bob", "dave"]), received_at=NOW)
    seed.skipped_recipient(ring, "bob", "call pushes muted until 2026-12-01T00:00:00Z")
    seed.skipped_recipient(ring, "dave", "no active device")
    empty = seed.event(ring_body("default:c8", "alice", []), received_at=NOW)
    with db.transaction() as session:
        detail = event_log.event_detail(session, ring)
        listed = {e.id: e for e in event_log.list_events(session, call_cid="default:c8")}
        entries = event_log.call_trace(session, "default:c7")
    assert detail.reach == event_log.Reach(2, 0, 0, "rang nobody (2 recipients)")
    assert listed[empty].reach.summary == "rang nobody"  # processed with no outcome at all
    assert {(d.user_id, d.device_id, d.kind, d.reason) for d in detail.deliveries} == {
        ("bob", None, "", "call pushes muted until 2026-12-01T00:00:00Z"),
        ("dave", None, "", "no active device"),
    }
    assert event_log.as_json(detail)["reach"] == {
        "recipients": 2,
        "reached": 0,
        "unconfirmed": 0,
        "summary": "rang nobody (2 recipients)",
    }
    webhook, recipients, *pushes = entries
    assert webhook.reach == detail.reach and "rang nobody (2 recipients)" in webhook.summary
    assert recipients.summary.startswith("0 device(s) of 2 user(s)")
    assert [p.summary for p in pushes] == [
        "skipped (call pushes muted until 2026-12-01T00:00:00Z): bob",
        "skipped (no active device): dave",
    ]
    # Recorded per recipient, so nobody is described again from their devices now.
    assert all(e.kind != "device" for e in entries)

"""A user's side of the event log (worker.ops.user_activity, worker.ops.user_events) on SQLite and
PostgreSQL: every event that concerned the user as the caller or a recipient, each push to each
of their devices, why a recipient got none, the app as tenant, the window, paging, and user ids
that are also LIKE wildcards or JSON escapes."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from tests.ops_data import API_KEY, Seeder, notification_body, now, ring_body, stop_body
from worker.ops import user_activity, user_events
from worker.storage import preferences
from worker.storage.database import Database
from worker.storage.models import WebhookEvent

OTHER_APP = "other-app-key"
BOB_VOIP = "b0b0" * 16
BOB_FCM = "bob-fcm-" + "x" * 40
BOB_OTHER = "b1b1" * 16
ALICE_VOIP = "a1a1" * 16


def seed_bob(db: Database) -> dict[str, int]:
    """Bob's last hours in two apps: rung by alice (one device answered, one failed), calling
    alice, in a fan-out with no push (his tokens were dead then), rung in the other app, a call
    whose id is "bob" (not about him), and a ring three days ago."""
    seed = Seeder(db)
    ids = {
        "bob_voip": seed.device("bob", "apns", BOB_VOIP, voip=True),
        "bob_fcm": seed.device("bob", "fcm", BOB_FCM),
        "alice_voip": seed.device("alice", "apns", ALICE_VOIP, voip=True),
        "bob_other": seed.device("bob", "apns", BOB_OTHER, voip=True, api_key=OTHER_APP),
    }
    t0 = now() - timedelta(hours=1)
    ids["old"] = seed.event(
        ring_body("default:old", "alice", ["bob"]), received_at=now() - timedelta(days=3)
    )
    ids["rung"] = seed.event(ring_body("default:c1", "alice", ["bob", "carol"]), received_at=t0)
    seed.delivery(ids["rung"], ids["bob_voip"], "sent", user_id="bob", token_hint="b0b0b0…b0b0")
    seed.delivery(
        ids["rung"],
        ids["bob_fcm"],
        "failed",
        user_id="bob",
        platform="fcm",
        kind="data",
        token_hint="bob-fc…xxxx",
        reason="INTERNAL",
        status_code=500,
        latency_ms=250.0,
    )
    ids["calling"] = seed.event(
        ring_body("default:c2", "bob", ["alice"]), received_at=t0 + timedelta(minutes=5)
    )
    seed.delivery(ids["calling"], ids["alice_voip"], "sent", user_id="alice")
    ids["fanout"] = seed.event(
        notification_body("default:c3", "alice", []), received_at=t0 + timedelta(minutes=10)
    )
    seed.chunk(ids["fanout"], 0, [("carol", "Carol"), ("bob", "Bob")])
    ids["other_app"] = seed.event(
        ring_body("default:c1", "alice", ["bob"]),
        received_at=t0 + timedelta(minutes=15),
        api_key=OTHER_APP,
    )
    seed.delivery(ids["other_app"], ids["bob_other"], "sent", user_id="bob", latency_ms=31.0)
    ids["named_bob"] = seed.event(
        ring_body("default:bob", "alice", ["carol"]), received_at=t0 + timedelta(minutes=20)
    )
    return ids


def activity(db: Database, user_id: str = "bob", **kwargs):
    kwargs.setdefault("since", now() - timedelta(hours=24))
    with db.transaction() as session:
        return user_activity.user_activity(session, user_id, **kwargs)


def test_every_event_that_concerned_the_user_with_each_push(db):
    ids = seed_bob(db)
    found = activity(db)
    assert [e.id for e in found.events] == [
        ids["other_app"],
        ids["fanout"],
        ids["calling"],
        ids["rung"],
    ]
    by_id = {e.id: e for e in found.events}

    rung = by_id[ids["rung"]]
    assert rung.roles == ("member", "recipient")
    assert [(p.platform, p.kind, p.status, p.reason, p.latency_ms) for p in rung.pushes] == [
        ("apns", "voip", "sent", None, 42.0),
        ("fcm", "data", "failed", "INTERNAL", 250.0),
    ]
    assert rung.no_push is None

    calling = by_id[ids["calling"]]
    assert calling.roles == ("caller",) and calling.pushes == () and calling.no_push is None

    # A fan-out recipient with no push: why, from his devices in that app.
    fanout = by_id[ids["fanout"]]
    assert fanout.roles == ("recipient",) and fanout.pushes == ()
    assert fanout.no_push is not None and fanout.no_push.startswith("no push: apns voip")
    assert found.next_before is None


def test_the_app_is_a_tenant(db):
    ids = seed_bob(db)
    mine = activity(db, api_key=API_KEY)
    assert ids["other_app"] not in [e.id for e in mine.events]
    theirs = activity(db, api_key=OTHER_APP)
    assert [e.id for e in theirs.events] == [ids["other_app"]]
    (push,) = theirs.events[0].pushes
    assert push.status == "sent" and push.latency_ms == 31.0


def test_the_window_and_the_pages(db):
    ids = seed_bob(db)
    assert [e.id for e in activity(db, since=now() - timedelta(days=4)).events][-1] == ids["old"]
    assert activity(db, since=now() - timedelta(minutes=30)).events == ()
    assert [e.id for e in activity(db, until=now() - timedelta(minutes=52)).events] == [
        ids["calling"],
        ids["rung"],
    ]

    first = activity(db, limit=3)
    assert [e.id for e in first.events] == [ids["other_app"], ids["fanout"], ids["calling"]]
    assert first.next_before == ids["calling"]
    second = activity(db, limit=3, before=first.next_before)
    assert [e.id for e in second.events] == [ids["rung"]] and second.next_before is None


def test_a_muted_recipient_is_told_so(db):
    ids = seed_bob(db)
    with db.transaction() as session:
        preferences.set_preference(session, API_KEY, "bob", True)
    found = {e.id: e for e in activity(db).events}
    assert found[ids["fanout"]].no_push.startswith("no push: call pushes muted; ")


def test_the_overview_has_devices_and_preferences(db):
    seed_bob(db)
    until = now() + timedelta(hours=2)
    with db.transaction() as session:
        preferences.set_preference(session, API_KEY, "bob", True, until)
        overview = user_activity.user_overview(
            session, "bob", now() - timedelta(hours=24), api_key=API_KEY
        )
    assert [(d.platform, d.voip) for d in overview.devices] == [("apns", True), ("fcm", False)]
    assert overview.devices[0].last_push_status == "sent"
    assert overview.devices[1].last_push_status == "failed"
    (pref,) = overview.preferences
    assert pref.muted and pref.muted_now and pref.muted_until == until
    assert len(overview.activity.events) == 3


@pytest.mark.parametrize("user_id", ["b%b", "b_b", "a&b<c>", "zoë", 'q"uote\\'])
def test_user_ids_are_matched_exactly_however_the_body_spells_them(db, user_id):
    seed = Seeder(db)
    body = ring_body("default:x", "alice", [user_id, "bob", "bXb"])
    theirs = seed.event(body)
    # Stream's Go encoder writes <, > and & as \u003c, \u003e, \u0026; Python's escapes
    # non-ASCII: both are found.
    go_style = ring_body("default:y", "alice", ["carol"])
    go_style["members"].append({"user_id": "PLACEHOLDER"})
    text = json.dumps(go_style).replace('"PLACEHOLDER"', user_events.json_spellings(user_id)[-1])
    with db.transaction() as session:
        row = WebhookEvent(
            webhook_id=f"go-{user_id}", api_key=API_KEY, event_type="call.ring", body=text
        )
        session.add(row)
        session.flush()
        go_id = row.id
    seed.event(ring_body("default:z", "alice", ["bbb", "bob"]))  # a wildcard would match these
    assert [e.id for e in activity(db, user_id).events] == [go_id, theirs]


def test_json_spellings():
    assert user_events.json_spellings("bob") == ['"bob"']
    assert user_events.json_spellings("zoë") == ['"zoë"', '"zo\\u00eb"']
    assert user_events.json_spellings("a&b") == ['"a&b"', '"a\\u0026b"']


def test_who_accepted_or_ended_is_the_actor_and_the_calls_creator_its_caller(db):
    seed = Seeder(db)
    accepted = seed.event(stop_body("call.accepted", "default:c1", "bob"))
    ended = seed.event(
        {**stop_body("call.ended", "default:c1", "carol"), "call": {"created_by": {"id": "bob"}}}
    )
    found = {e.id: e for e in activity(db).events}
    assert found[accepted].roles == ("actor",) and found[accepted].no_push is None
    assert found[ended].roles == ("caller",)
    assert [e.id for e in activity(db, "carol").events] == [ended]


def test_pages_interleave_pushed_events_and_events_only_in_bodies(db):
    """The body search is cut at the oldest of the indexed finds: an event only in a body (bob
    calling) still comes in its place among the rings he was pushed."""
    seed = Seeder(db)
    phone = seed.device("dave", "fcm", "dave-fcm-" + "d" * 40)
    t0 = now() - timedelta(minutes=30)
    order = []
    for n in range(5):
        at = t0 + timedelta(minutes=n)
        if n == 2:
            order.append(seed.event(ring_body("default:out", "dave", ["erin"]), received_at=at))
            continue
        rung = seed.event(ring_body(f"default:in{n}", "erin", ["dave"]), received_at=at)
        seed.delivery(rung, phone, "sent", user_id="dave", platform="fcm", kind="data")
        order.append(rung)
    newest_first = order[::-1]
    pages, before = [], None
    while True:
        page = activity(db, "dave", limit=2, before=before)
        pages.append([e.id for e in page.events])
        if page.next_before is None:
            break
        before = page.next_before
    assert pages == [newest_first[:2], newest_first[2:4], newest_first[4:]]
    assert activity(db, "dave", limit=3).events[2].roles == ("caller",)

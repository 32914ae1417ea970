"""`callpush events …` and `callpush trace` through click's CliRunner, against a real PostgreSQL
and Redis (the production mode) and a SQLite file (the embedded mode, which processes inline)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import redis
from click.testing import CliRunner
from sqlalchemy import select

from tests.ops_data import (
    API_KEY,
    SECRET,
    Seeder,
    notification_body,
    now,
    ring_body,
    stop_body,
)
from worker.commands.events import events
from worker.commands.trace import trace
from worker.foundation.settings import DEV_API_KEY
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head
from worker.storage.models import Delivery, FanoutChunk, WebhookEvent

BOB_VOIP = "b0b0" * 16
BOB_FCM = "bob-fcm-" + "x" * 40
CAROL_FCM = "carol-fcm-" + "y" * 40


def seed_world(db: Database) -> dict[str, int]:
    seed = Seeder(db)
    ids = {
        "bob_voip": seed.device("bob", "apns", BOB_VOIP, voip=True),
        "bob_fcm": seed.device("bob", "fcm", BOB_FCM),
        "carol_fcm": seed.device("carol", "fcm", CAROL_FCM),
    }
    t0 = now() - timedelta(minutes=30)
    ring = seed.event(
        # A two-hour ring: still ringing, so a replay re-sends rather than records "expired".
        ring_body("default:c1", "alice", ["bob", "carol"], timeout_ms=2 * 3600 * 1000),
        status="failed",
        reason="1 failed, 2 sent",
        received_at=t0,
    )
    pushed = t0 + timedelta(milliseconds=5)
    seed.delivery(
        ring, ids["bob_voip"], "sent", user_id="bob", token_hint="b0b0b0…b0b0", created_at=pushed
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
        latency_ms=250.0,
        created_at=pushed,
    )
    seed.delivery(
        ring,
        ids["carol_fcm"],
        "sent",
        user_id="carol",
        platform="fcm",
        token_hint="carol-…yyyy",
        created_at=pushed,
    )
    accepted = seed.event(
        stop_body("call.accepted", "default:c1", "carol"), received_at=t0 + timedelta(seconds=4)
    )
    old = seed.event(
        notification_body("default:c2", "alice", ["bob"]), received_at=now() - timedelta(days=3)
    )
    seed.chunk(old, 0, [("bob", "Bob")])
    seed.delivery(old, ids["bob_fcm"], "sent", user_id="bob", platform="fcm", kind="data")
    ignored = seed.event(
        {"type": "call.updated", "call_cid": "default:c2"},
        status="ignored",
        received_at=now() - timedelta(hours=2),
    )
    return {"ring": ring, "accepted": accepted, "old": old, "ignored": ignored, **ids}


@pytest.fixture
def production(postgres_url, redis_url, tmp_path, monkeypatch):
    """PostgreSQL + Redis, seeded; ``run(*args)`` invokes `callpush events`."""
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no callpush.toml from the working directory
    upgrade_to_head(postgres_url)
    db = Database(postgres_url)
    ids = seed_world(db)
    env = {
        "CALLPUSH_DATABASE_URL": postgres_url,
        "CALLPUSH_BROKER_URL": redis_url,
        "CALLPUSH_STREAM_API_KEY": API_KEY,
        "CALLPUSH_STREAM_API_SECRET": SECRET,
    }
    runner = CliRunner()
    broker = redis.Redis.from_url(redis_url)

    def run(*args: str, command=events, color: bool = False):
        return runner.invoke(command, list(args), env=env, catch_exceptions=False, color=color)

    yield run, db, ids, broker
    broker.close()
    db.dispose()


def queued_tasks(broker: redis.Redis, queue: str) -> list[tuple[str, int]]:
    """(task name, event id) of the messages waiting in a Redis queue (kombu's list)."""
    found = []
    for raw in broker.lrange(queue, 0, -1):
        message = json.loads(raw)
        args, _kwargs, _embed = json.loads(_body(message))
        found.append((message["headers"]["task"], args[0]))
    return found


def _body(message: dict) -> str:
    import base64

    body = message["body"]
    return (
        base64.b64decode(body).decode()
        if message.get("properties", {}).get("body_encoding") == "base64"
        else body
    )


def event_row(db: Database, event_id: int) -> WebhookEvent:
    with db.transaction() as session:
        return session.get(WebhookEvent, event_id)


def delivery_statuses(db: Database, event_id: int) -> dict[str, str]:
    with db.transaction() as session:
        rows = session.scalars(select(Delivery).where(Delivery.event_id == event_id))
        return {d.token_hint: d.status for d in rows}


# --- list, show, trace ------------------------------------------------------------------------


def listed_ids(output: str) -> list[int]:
    return [int(line.split()[0]) for line in output.splitlines()[1:] if line.split()[0].isdigit()]


pytestmark = pytest.mark.timeout(60)


@pytest.mark.services
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], ["ignored", "old", "accepted", "ring"]),
        (["--status", "failed"], ["ring"]),
        (["--type", "call.accepted"], ["accepted"]),
        (["--call", "default:c1"], ["accepted", "ring"]),
        (["--since", "1h"], ["accepted", "ring"]),
        (["--until", "1h"], ["ignored", "old"]),
        (["--since", "1d", "--until", "1h"], ["ignored"]),
        (["--limit", "2"], ["ignored", "old"]),
    ],
)
def test_list_filters(production, args, expected):
    run, _, ids, _ = production
    result = run("list", *args)
    assert result.exit_code == 0, result.output
    # Newest first: the ids were seeded in this order, so they are sorted descending.
    assert listed_ids(result.output) == sorted((ids[n] for n in expected), reverse=True)


@pytest.mark.services
def test_list_shows_push_outcomes_and_json(production):
    run, _, ids, _ = production
    result = run("list", "--status", "failed")
    assert "call.ring" in result.output and "default:c1" in result.output
    assert "2 sent, 1 failed" in result.output
    document = json.loads(run("list", "--call", "default:c1", "--json").stdout)
    assert [e["id"] for e in document["events"]] == [ids["accepted"], ids["ring"]]
    assert document["events"][1]["pushes"] == {"sent": 2, "failed": 1}


@pytest.mark.services
def test_list_rejects_bad_arguments(production):
    run, _, _, _ = production
    bad_status = run("list", "--status", "done")
    assert bad_status.exit_code == 2 and "done" in bad_status.output
    bad_time = run("list", "--since", "yesterday")
    assert bad_time.exit_code == 2 and "neither a duration" in bad_time.output


@pytest.mark.services
def test_show_an_event_with_recipients_and_outcomes(production):
    run, _, ids, _ = production
    result = run("show", str(ids["ring"]))
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"event {ids['ring']}  call.ring  failed: 1 failed, 2 sent" in out
    assert "recipients  bob, carol" in out
    assert "pushes      2 sent, 1 failed" in out
    failed_line = next(line for line in out.splitlines() if "bob-fc…xxxx" in line)
    assert "failed" in failed_line and "250 ms" in failed_line and "INTERNAL [500]" in failed_line
    for token in (BOB_VOIP, BOB_FCM, CAROL_FCM):
        assert token not in out

    document = json.loads(run("show", str(ids["ring"]), "--json").stdout)
    assert document["recipients"] == ["bob", "carol"]
    assert {d["status"] for d in document["deliveries"]} == {"sent", "failed"}

    missing = run("show", "999999")
    assert missing.exit_code == 1 and "no event 999999" in missing.output


@pytest.mark.services
def test_trace_prints_the_calls_timeline(production):
    run, _, ids, _ = production
    result = run("default:c1", command=trace)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("call default:c1, from ")
    assert f"<- #{ids['ring']}" in lines[1] and "call.ring received; failed" in lines[1]
    assert "3 device(s) of 2 user(s): bob, carol" in lines[2]
    pushes = [line for line in lines if "-> #" in line]
    assert len(pushes) == 3
    assert any("failed (INTERNAL) after 250 ms: bob fcm data bob-fc…xxxx" in p for p in pushes)
    assert "call.accepted received" in lines[-1]

    document = json.loads(run("default:c1", "--json", command=trace).stdout)
    assert [e["kind"] for e in document["entries"]].count("push") == 3

    unknown = run("default:nope", command=trace)
    assert unknown.exit_code == 1 and "no events for call default:nope" in unknown.output


@pytest.mark.services
def test_a_ring_that_rang_nobody_is_shown_as_a_problem(production):
    run, db, _, _ = production
    seed = Seeder(db)
    ring = seed.event(
        ring_body("default:c5", "alice", ["bob"]), reason="rang nobody (1 recipient): 1 skipped"
    )
    seed.skipped_recipient(ring, "bob", "call pushes muted")
    listed = run("list", "--call", "default:c5")
    line = next(line for line in listed.stdout.splitlines() if line.split()[:1] == [str(ring)])
    assert line.endswith("rang nobody (1 recipient): 1 skipped")
    coloured = run("list", "--call", "default:c5", color=True).output
    assert "\x1b[33m" in coloured  # yellow: a warning, even though it was processed

    shown = run("show", str(ring)).stdout
    assert "reach       rang nobody (1 recipient)" in shown
    bob = next(line for line in shown.splitlines() if line.lstrip().startswith("bob "))
    assert bob.split()[:3] == ["bob", "-", "skipped"] and bob.endswith("call pushes muted")
    document = json.loads(run("show", str(ring), "--json").stdout)
    assert document["reach"] == {
        "recipients": 1,
        "reached": 0,
        "unconfirmed": 0,
        "summary": "rang nobody (1 recipient)",
    }

    traced = run("default:c5", command=trace).stdout
    assert "rang nobody (1 recipient)" in traced.splitlines()[1]
    assert any(line.endswith("skipped (call pushes muted): bob") for line in traced.splitlines())
    assert "\x1b[33m" in run("default:c5", command=trace, color=True).output


# --- replay -----------------------------------------------------------------------------------


@pytest.mark.services
def test_dry_run_prints_events_and_devices_and_changes_nothing(production):
    run, db, ids, broker = production
    before = event_row(db, ids["ring"])
    deliveries_before = delivery_statuses(db, ids["ring"])

    result = run("replay", str(ids["ring"]), "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"event {ids['ring']}  call.ring  default:c1  (failed): would re-send 1 push(es)" in (
        result.output
    )
    assert "bob              fcm   bob-fc…xxxx    was failed" in result.output
    assert "dry run: 1 event(s), 1 device(s) to re-send; nothing was changed" in result.output

    forced = run("replay", str(ids["ring"]), "--dry-run", "--force")
    assert "would re-send 3 push(es)" in forced.output
    assert "b0b0b0…b0b0" in forced.output and "carol-…yyyy" in forced.output

    by_window = run("replay", "--failed", "--since", "1h", "--dry-run")
    assert f"event {ids['ring']} " in by_window.output
    assert "1 event(s), 1 device(s)" in by_window.output

    after = event_row(db, ids["ring"])
    assert (after.status, after.replays, after.status_reason) == (
        before.status,
        before.replays,
        before.status_reason,
    )
    assert delivery_statuses(db, ids["ring"]) == deliveries_before
    assert broker.llen("bulk") == 0 and broker.llen("ring") == 0


@pytest.mark.services
def test_replay_reopens_and_queues_on_the_bulk_queue(production):
    run, db, ids, broker = production
    result = run("replay", str(ids["ring"]))
    assert result.exit_code == 0, result.output
    assert "replayed 1 event(s), 1 device(s) to re-send; queued on the bulk queue" in (
        result.output
    )
    row = event_row(db, ids["ring"])
    assert (row.status, row.replays, row.replay_force) == ("received", 1, False)
    assert delivery_statuses(db, ids["ring"]) == {
        "b0b0b0…b0b0": "sent",
        "bob-fc…xxxx": "retry",  # reclaimable by the replay; the sent ones are left alone
        "carol-…yyyy": "sent",
    }
    # A ring, replayed on the bulk queue: never ahead of live rings.
    assert queued_tasks(broker, "bulk") == [("callpush.process_event", ids["ring"])]
    assert broker.llen("ring") == 0


@pytest.mark.services
def test_replay_unknown_ids_and_usage(production):
    run, _, _ids, _ = production
    unknown = run("replay", "424242", "--dry-run")
    assert unknown.exit_code == 1 and "unknown event id(s): 424242" in unknown.output
    for args, message in [
        ([], "give event ids"),
        (["1", "--failed", "--since", "1h"], "give event ids"),
        (["--failed"], "--failed needs --since"),
        (["1", "--since", "1h"], "for --failed only"),
    ]:
        result = run("replay", *args)
        assert result.exit_code == 2 and message in result.output, result.output
    nothing = run("replay", "--failed", "--since", "1h", "--type", "call.missed")
    assert nothing.exit_code == 0 and "no failed events in that window" in nothing.output


@pytest.mark.services
def test_replay_shows_a_progress_bar_for_many_events(production):
    run, db, _, broker = production
    seed = Seeder(db)
    many = [
        seed.event(notification_body(f"default:n{i}", "alice", ["bob"]), status="failed")
        for i in range(6)
    ]
    result = run("replay", "--failed", "--since", "10m", "--type", "call.notification")
    assert result.exit_code == 0, result.output
    assert "replaying (bulk queue)" in result.output
    assert "replayed 6 event(s)" in result.output
    assert sorted(args for _, args in queued_tasks(broker, "bulk")) == many


# --- import -----------------------------------------------------------------------------------


@pytest.mark.services
def test_import_stores_queues_and_skips_duplicates(production, tmp_path):
    run, db, ids, broker = production
    ring = ring_body("default:imp", "alice", ["bob"])
    ring_line = json.dumps(ring)
    ended = stop_body("call.ended", "default:imp", "alice")
    updated = {"type": "call.updated", "call_cid": "default:imp"}
    with db.transaction() as session:
        already_stored = session.get(WebhookEvent, ids["old"]).body
    lines = [
        ring_line,
        ring_line,  # the same body again: its sha256 fingerprint
        json.dumps({"webhook_id": "wh-ended-1", "body": json.dumps(ended)}),
        json.dumps({"webhook_id": "wh-ended-1", "body": ended}),  # the same webhook id
        json.dumps({"body": json.loads(already_stored)}),  # stored already under another id
        json.dumps(updated),
        "",
        "{not json",
        "[1, 2]",
        # A ring without a call: stored as failed, as the receiver stores it (nothing to ring).
        json.dumps({"type": "call.ring", "members": []}),
        json.dumps({"body": updated, "api_key": "another-app"}),
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")

    result = run("import", str(path))
    assert result.exit_code == 1, result.output  # three lines rejected
    assert "imported 4, duplicates 3, invalid 3; 1 queued" in result.output
    assert "line 8: not JSON" in result.output
    assert "line 9: not a JSON object" in result.output
    assert "3 line(s) rejected (not imported)" in result.stderr
    assert result.stdout.splitlines() == ["imported 4, duplicates 3, invalid 3; 1 queued"]
    assert "1 imported event(s) cannot be acted on: stored as failed" in result.output
    assert "line 11: the envelope's api_key is not the one imported for" in result.output
    with db.transaction() as session:
        failed = session.scalars(
            select(WebhookEvent).where(
                WebhookEvent.event_type == "call.ring", WebhookEvent.call_cid.is_(None)
            )
        ).one()
    assert failed.status == "failed"
    assert failed.status_reason == (
        "cannot act on this call.ring event: the event has no valid 'call_cid'"
    )

    with db.transaction() as session:
        stored = {
            row.event_type: row
            for row in session.scalars(
                select(WebhookEvent).where(WebhookEvent.call_cid == "default:imp")
            )
        }
    assert set(stored) == {"call.ring", "call.ended", "call.updated"}
    assert stored["call.ring"].status == "received"  # the receiver's status rules
    assert stored["call.ring"].webhook_id.startswith("sha256:")
    assert stored["call.ring"].api_key == API_KEY
    assert stored["call.ended"].webhook_id == "wh-ended-1"
    assert stored["call.ended"].status == "processed"
    assert stored["call.updated"].status == "ignored"
    # Queued like the receiver queues: a ring on the ring queue.
    assert queued_tasks(broker, "ring") == [("callpush.process_ring_event", stored["call.ring"].id)]

    again = run("import", str(path))
    assert "imported 0, duplicates 7, invalid 3; 0 queued" in again.output


@pytest.mark.services
def test_import_needs_a_configured_api_key(production, tmp_path):
    run, _, _, _ = production
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"type": "call.updated"}) + "\n")
    result = run("import", str(path), "--api-key", "not-configured")
    assert result.exit_code == 2 and "not the API key of a configured Stream app" in result.output
    assert run("import", str(path), "--api-key", API_KEY).exit_code == 0


# --- purge ------------------------------------------------------------------------------------


@pytest.mark.services
def test_purge_deletes_old_events_with_their_records(production):
    run, db, ids, _ = production
    dry = run("purge", "--older-than", "2d", "--dry-run")
    assert dry.exit_code == 0 and "dry run: 1 event(s) older than 2 days" in dry.output
    assert event_row(db, ids["old"]) is not None

    result = run("purge", "--older-than", "2d")
    assert result.exit_code == 0, result.output
    assert "deleted 1 event(s), 1 delivery record(s), 1 fan-out chunk(s)" in result.output
    assert event_row(db, ids["old"]) is None
    with db.transaction() as session:
        assert session.scalars(select(FanoutChunk)).all() == []
        assert session.get(WebhookEvent, ids["ring"]) is not None

    too_short = run("purge", "--older-than", "5m")
    assert too_short.exit_code == 2 and "refusing to purge" in too_short.output


# --- the embedded mode: no broker, this process processes -------------------------------------


@pytest.fixture
def embedded(sqlite_url, tmp_path, monkeypatch):
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    upgrade_to_head(sqlite_url)
    db = Database(sqlite_url)
    runner = CliRunner()
    env = {"CALLPUSH_DATABASE_URL": sqlite_url, "CALLPUSH_PUSH_PROVIDER": "console"}

    def run(*args: str):
        return runner.invoke(events, list(args), env=env, catch_exceptions=False)

    yield run, db
    db.dispose()


def test_embedded_replay_is_processed_inline(embedded):
    run, db = embedded
    seed = Seeder(db)
    bob = seed.device("bob", "fcm", BOB_FCM)
    carol = seed.device("carol", "fcm", CAROL_FCM)
    event_id = seed.event(
        notification_body("default:e1", "alice", ["bob", "carol"]), status="failed"
    )
    seed.chunk(event_id, 0, [("bob", "Bob"), ("carol", "Carol")])
    seed.delivery(event_id, bob, "failed", user_id="bob", platform="fcm", token_hint="bob")
    seed.delivery(event_id, carol, "sent", user_id="carol", platform="fcm", token_hint="carol")

    result = run("replay", str(event_id))
    assert result.exit_code == 0, result.output
    assert "processed here: 1 processed" in result.output
    assert delivery_statuses(db, event_id) == {"bob": "sent", "carol": "sent"}
    with db.transaction() as session:
        row = session.get(WebhookEvent, event_id)
        bob_push = session.scalar(select(Delivery).where(Delivery.token_hint == "bob"))
    assert row.status == "processed" and row.replays == 1
    assert bob_push.attempts == 2 and bob_push.reason == "console"


def test_embedded_expired_ring_is_not_rerung_without_force(embedded):
    run, db = embedded
    seed = Seeder(db)
    bob = seed.device("bob", "apns", BOB_VOIP, voip=True)
    ring = ring_body("default:old-ring", "alice", ["bob"], timeout_ms=1000)
    event_id = seed.event(ring, status="failed", received_at=now() - timedelta(hours=1))
    seed.delivery(event_id, bob, "failed", user_id="bob", token_hint="b0b0")

    dry = run("replay", str(event_id), "--dry-run")
    assert "the ring is over: 1 push(es) recorded as expired, not rung (--force re-rings)" in (
        dry.output
    )
    assert "0 device(s) to re-send" in dry.output
    result = run("replay", str(event_id))
    assert result.exit_code == 0, result.output
    assert delivery_statuses(db, event_id) == {"b0b0": "expired"}

    forced = run("replay", str(event_id), "--force")
    assert forced.exit_code == 0, forced.output
    assert delivery_statuses(db, event_id) == {"b0b0": "sent"}


def test_embedded_import_is_processed_inline(embedded, tmp_path):
    run, db = embedded
    # Imported for the embedded mode's development app, so only that app's devices are rung.
    Seeder(db).device("bob", "fcm", BOB_FCM, api_key=DEV_API_KEY)
    Seeder(db).device("bob", "fcm", BOB_FCM)  # the other app's bob: not rung
    path = tmp_path / "dead-letters.jsonl"
    path.write_text(json.dumps(notification_body("default:dl", "alice", ["bob"])) + "\n")
    result = run("import", str(path))  # the embedded mode's development app
    assert result.exit_code == 0, result.output
    assert "imported 1, duplicates 0, invalid 0; 1 processed here" in result.output
    with db.transaction() as session:
        row = session.scalar(select(WebhookEvent).where(WebhookEvent.call_cid == "default:dl"))
        assert row.status == "processed"
        assert [d.status for d in session.scalars(select(Delivery))] == ["sent"]


# --- stale events and poison events (issue 11) ------------------------------------------------


def _arrived_stale(db: Database, event_id: int, created: timedelta) -> None:
    """As the receiver stores a push event Stream created long before it arrived."""
    with db.transaction() as session:
        row = session.get(WebhookEvent, event_id)
        row.event_created_at = row.received_at - created
        body = json.loads(row.body)
        body["created_at"] = int(row.event_created_at.timestamp() * 1e9)
        row.body = json.dumps(body)
        row.status_reason = "stale: created 7d before it arrived (...); not pushed"


def test_embedded_replay_of_a_stale_event_says_why_it_is_not_pushed(embedded):
    run, db = embedded
    seed = Seeder(db)
    seed.device("bob", "fcm", BOB_FCM)
    event_id = seed.event(notification_body("default:st", "alice", ["bob"]), status="ignored")
    _arrived_stale(db, event_id, timedelta(days=7))

    dry = run("replay", str(event_id), "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"event {event_id}  call.notification  default:st  (ignored): not pushed: stale: " in (
        dry.output
    )
    assert "created 7d before it arrived" in dry.output and "--allow-stale" in dry.output
    result = run("replay", str(event_id))
    assert result.exit_code == 0, result.output
    assert "processed here: 1 ignored" in result.output
    assert delivery_statuses(db, event_id) == {}  # still never pushed

    allowed = run("replay", str(event_id), "--allow-stale", "--dry-run")
    assert "not pushed" not in allowed.output
    pushed = run("replay", str(event_id), "--allow-stale")
    assert pushed.exit_code == 0, pushed.output
    assert "processed here: 1 processed" in pushed.output
    assert list(delivery_statuses(db, event_id).values()) == ["sent"]
    assert event_row(db, event_id).allow_stale is True


def test_embedded_import_of_old_events_needs_allow_stale(embedded, tmp_path):
    run, db = embedded
    Seeder(db).device("bob", "fcm", BOB_FCM)
    old = notification_body("default:old-dl", "alice", ["bob"])
    old["created_at"] = time_ns_ago(timedelta(hours=3))
    path = tmp_path / "dead-letters.jsonl"
    path.write_text(json.dumps(old) + "\n")

    result = run("import", str(path))
    assert result.exit_code == 0, result.output
    assert "imported 1, duplicates 0, invalid 0; 0 processed here" in result.output
    assert "1 imported event(s) are stale" in result.output
    assert "import with --allow-stale to push them" in result.output
    with db.transaction() as session:
        row = session.scalar(select(WebhookEvent).where(WebhookEvent.call_cid == "default:old-dl"))
        assert row.status == "ignored" and row.status_reason.startswith("stale: created 3h ")
        stale_id = row.id

    # The same line again with the flag is a duplicate (stored already): replay it instead.
    again = run("import", str(path), "--allow-stale")
    assert "imported 0, duplicates 1" in again.output
    replayed = run("replay", str(stale_id), "--allow-stale")
    assert "processed here: 1 processed" in replayed.output

    other = notification_body("default:old-dl-2", "alice", ["bob"])
    other["created_at"] = time_ns_ago(timedelta(hours=3))
    path.write_text(json.dumps(other) + "\n")
    allowed = run("import", str(path), "--allow-stale")
    assert "imported 1, duplicates 0, invalid 0; 1 processed here" in allowed.output
    assert "stale" not in allowed.output


def test_embedded_replay_lists_a_ring_with_an_absurd_timeout(embedded):
    """A ring whose timeout overflowed every deadline broke every replay that included it (a
    traceback here, a 500 in the admin API and the dashboard)."""
    run, db = embedded
    seed = Seeder(db)
    seed.device("bob", "apns", BOB_VOIP, voip=True)
    poison = ring_body("default:poison", "alice", ["bob"], timeout_ms=10**20)
    poison_id = seed.event(poison, status="failed", reason="unexpected error: OverflowError: …")
    other = seed.event(notification_body("default:np", "alice", ["bob"]), status="failed")

    dry = run("replay", "--failed", "--since", "1h", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"event {poison_id}  call.ring  default:poison" in dry.output
    assert f"event {other}  call.notification" in dry.output
    result = run("replay", str(poison_id))
    assert result.exit_code == 0, result.output
    assert "processed here: 1 processed" in result.output
    assert delivery_statuses(db, poison_id) == {"b0b0b0…b0b0": "sent"}


def time_ns_ago(age: timedelta) -> int:
    return int((now() - age).timestamp() * 1e9)


def test_replay_failed_says_when_it_stops_at_its_limit(embedded):
    run, db = embedded
    seed = Seeder(db)
    ids = [
        seed.event(notification_body(f"default:lim{n}", "alice", ["bob"]), status="failed")
        for n in range(5)
    ]
    result = run("replay", "--failed", "--since", "1h", "--limit", "3", "--dry-run")
    assert result.exit_code == 0, result.output
    assert (
        f"stopping at the limit of 3 events (the oldest, up to event {ids[2]}): 2 more failed "
        "event(s) in the window are left out" in result.stderr
    )
    assert "dry run: 3 event(s)" in result.stdout
    assert all(f"event {i} " in result.stdout for i in ids[:3])
    assert f"event {ids[3]} " not in result.stdout

    everything = run("replay", "--failed", "--since", "1h", "--limit", "5", "--dry-run")
    assert "left out" not in everything.output and "dry run: 5 event(s)" in everything.stdout


@pytest.mark.services
def test_list_and_show_align_columns_for_long_values(production):
    run, db, _, _ = production
    long_cid = "livestream:" + "x" * 45
    Seeder(db).event(
        {"type": "call.session_participant_joined", "call_cid": long_cid}, status="ignored"
    )
    lines = run("list").stdout.splitlines()
    header = lines[0]
    for column in ("TYPE", "STATUS", "CALL", "PUSHES"):
        start = header.index(column)
        assert all(line[start - 2 : start] == "  " for line in lines[1:]), (column, lines)
    assert any(long_cid in line for line in lines)

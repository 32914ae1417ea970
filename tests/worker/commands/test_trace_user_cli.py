"""`callpush trace --user` and `callpush events list --user` through click's CliRunner against
PostgreSQL: did Bob's phone ring?"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from click.testing import CliRunner

from tests.ops_data import API_KEY, SECRET, Seeder, now, ring_body
from tests.worker.ops.test_user_activity import OTHER_APP, seed_bob
from worker.commands.events import events
from worker.commands.trace import trace
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head

pytestmark = [pytest.mark.services, pytest.mark.timeout(60)]


@pytest.fixture
def cli(postgres_url, tmp_path, monkeypatch):
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no callpush.toml from the working directory
    upgrade_to_head(postgres_url)
    db = Database(postgres_url)
    ids = seed_bob(db)
    env = {
        "CALLPUSH_DATABASE_URL": postgres_url,
        "CALLPUSH_STREAM_API_KEY": API_KEY,
        "CALLPUSH_STREAM_API_SECRET": SECRET,
    }
    runner = CliRunner()

    def run(command, *args: str):
        return runner.invoke(command, list(args), env=env, catch_exceptions=False)

    yield run, ids
    db.dispose()


def test_trace_user_shows_each_event_and_each_push_to_each_device(cli):
    run, ids = cli
    result = run(trace, "--user", "bob", "--since", "2h")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("user bob: 4 event(s) from ")

    rung = next(i for i, line in enumerate(lines) if f"#{ids['rung']} " in line)
    assert "call.ring default:c1  as member/recipient; processed" in lines[rung]
    assert lines[rung + 1].startswith("    -> sent after 42 ms: apns voip b0b0b0…b0b0 via apns")
    assert lines[rung + 2].startswith(
        "    -> failed (INTERNAL) after 250 ms: fcm data bob-fc…xxxx via fcm"
    )
    calling = next(line for line in lines if f"#{ids['calling']} " in line)
    assert "default:c2  as caller" in calling
    fanout = next(i for i, line in enumerate(lines) if f"#{ids['fanout']} " in line)
    assert "as recipient" in lines[fanout]
    assert lines[fanout + 1].startswith("     x no push: apns voip ")
    assert f"[{OTHER_APP}] call.ring" in result.stdout  # every app's bob, each named
    assert f"#{ids['named_bob']} " not in result.stdout  # a call named bob is not about him
    assert f"#{ids['old']} " not in result.stdout  # three days ago: outside --since 2h


def test_trace_user_shows_a_recipient_who_got_no_push_by_the_recorded_reason(cli, postgres_url):
    """A recipient's own ``skipped`` row (no device, no push kind) reads as "no push" and its
    reason, not as a push with empty fields."""
    run, _ = cli
    db = Database(postgres_url)
    seed = Seeder(db)
    muted = seed.event(ring_body("default:c9", "alice", ["bob"]))
    seed.delivery(
        muted,
        None,  # type: ignore[arg-type]  # the recipient's row has no device
        "skipped",
        user_id="bob",
        platform="",
        kind="",
        token_hint="",
        reason="call pushes muted",
        latency_ms=None,
    )
    db.dispose()
    lines = run(trace, "--user", "bob", "--since", "2h").stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if f"#{muted} " in line)
    assert lines[at + 1] == "     x no push: call pushes muted"


def test_trace_user_scoped_to_an_app_paged_and_as_json(cli):
    run, ids = cli
    result = run(trace, "--user", "bob", "--app", API_KEY, "--limit", "2")
    assert result.exit_code == 0, result.output
    assert OTHER_APP not in result.stdout
    assert f"(older events: --before {ids['calling']})" in result.stdout

    older = run(trace, "--user", "bob", "--app", API_KEY, "--before", str(ids["calling"]))
    assert f"#{ids['rung']} " in older.stdout and f"#{ids['fanout']} " not in older.stdout

    document = json.loads(run(trace, "--user", "bob", "--app", API_KEY, "--json").stdout)
    assert document["user_id"] == "bob" and document["api_key"] == API_KEY
    assert [e["id"] for e in document["events"]] == [ids["fanout"], ids["calling"], ids["rung"]]
    pushes = document["events"][2]["pushes"]
    assert [(p["status"], p["reason"], p["latency_ms"]) for p in pushes] == [
        ("sent", None, 42.0),
        ("failed", "INTERNAL", 250.0),
    ]

    nobody = run(trace, "--user", "nobody")
    assert nobody.exit_code == 0 and "(no events concerned nobody in that window)" in nobody.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give a call cid or --user USER_ID (one of them)"),
        (["default:c1", "--user", "bob"], "give a call cid or --user USER_ID (one of them)"),
        (["default:c1", "--since", "1h"], "--since/--until/--before go with --user"),
        (["--user", "bob", "--app", "nope"], "'nope' is not the API key of a configured"),
        (["--user", "bob", "--since", "soon"], "is neither a duration"),
    ],
)
def test_trace_needs_a_call_or_a_user(cli, args, message):
    run, _ = cli
    result = run(trace, *args)
    assert result.exit_code == 2 and message in result.output


def test_trace_of_a_call_still_works(cli):
    run, ids = cli
    result = run(trace, "default:c2", "--app", API_KEY)
    assert result.exit_code == 0, result.output
    assert f"<- #{ids['calling']}" in result.stdout


def test_events_list_by_user(cli):
    run, ids = cli
    result = run(events, "list", "--user", "bob", "--app", API_KEY)
    assert result.exit_code == 0, result.output
    listed = [int(line.split()[0]) for line in result.stdout.splitlines()[1:]]
    assert listed == [ids["fanout"], ids["calling"], ids["rung"]]
    assert "1 sent, 1 failed" in result.stdout  # the event's pushes, everyone's

    typed = run(events, "list", "--user", "bob", "--type", "call.notification")
    assert [int(line.split()[0]) for line in typed.stdout.splitlines()[1:]] == [ids["fanout"]]

    # --since widens the default 24 h window.
    since = (now() - timedelta(days=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
    wide = run(events, "list", "--user", "bob", "--since", since, "--app", API_KEY, "--json")
    assert [e["id"] for e in json.loads(wide.stdout)["events"]][-1] == ids["old"]

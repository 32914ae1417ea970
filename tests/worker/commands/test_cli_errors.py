"""Every `callpush` command, given bad arguments or surroundings (a database that is missing,
unreachable or not migrated, a file that is missing, unreadable, binary or one huge line, stored
bodies no event would hold), prints a clear message and exits non-zero: never a traceback.
Through the root group, as `callpush` runs them (worker.commands.errors)."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner, Result

from tests.ops_data import API_KEY, SECRET, Seeder, ring_body
from worker.cli import main
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head
from worker.storage.models import WebhookEvent

DB_PASSWORD = "hunter2-db-password"


# No CALLPUSH_* variable or ./callpush.toml of the developer's leaks in (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("isolated_settings")


def invoke(*args: str, **env: str) -> Result:
    variables = {f"CALLPUSH_{key.upper()}": value for key, value in env.items()}
    return CliRunner().invoke(main, list(args), env=variables)


def assert_clear_failure(result: Result, *fragments: str, code: int = 1) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    # CliRunner catches what escapes the command: only SystemExit (click's own exit) may.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    for fragment in fragments:
        assert fragment in result.output, result.output


# A broker the commands above never need to reach.
PRODUCTION = {"broker_url": "redis://127.0.0.1:1/0", "stream_api_key": API_KEY}


@pytest.mark.parametrize(
    "args",
    [
        ["events", "list"],
        ["events", "show", "1"],
        ["trace", "default:1"],
        ["devices", "list"],
        ["users", "show", "--user", "bob"],
        ["events", "purge", "--older-than", "30d", "--dry-run"],
    ],
)
def test_an_unreachable_database_is_a_message(args):
    url = f"postgresql+psycopg://callpush:{DB_PASSWORD}@127.0.0.1:1/callpush"
    result = invoke(*args, database_url=url, stream_api_secret=SECRET, **PRODUCTION)
    assert_clear_failure(result, "database_url postgresql+psycopg://callpush:***@127.0.0.1:1/")
    assert DB_PASSWORD not in result.output


@pytest.mark.services
def test_a_missing_database_is_a_message(postgres_admin_url):
    from sqlalchemy import make_url

    url = make_url(postgres_admin_url).set(database="callpush_no_such_db").render_as_string(False)
    result = invoke("events", "list", database_url=url, stream_api_secret=SECRET, **PRODUCTION)
    assert_clear_failure(result, '"callpush_no_such_db" does not exist')


@pytest.mark.services
def test_a_database_without_the_schema_says_to_upgrade(postgres_url):
    env = {"database_url": postgres_url, "stream_api_secret": SECRET, **PRODUCTION}
    result = invoke("trace", "a:b", **env)
    assert_clear_failure(result, "no callpush tables yet", "run `callpush db upgrade`")


def test_a_sqlite_file_in_a_missing_directory_is_a_message(tmp_path):
    url = f"sqlite:///{tmp_path / 'nowhere' / 'callpush.db'}"
    for args in (["events", "list"], ["devices", "list"], ["db", "upgrade"]):
        assert_clear_failure(invoke(*args, database_url=url), "database_url sqlite:///")


def test_a_bad_database_url_is_a_message():
    assert_clear_failure(invoke("events", "list", database_url="not a url"), "database_url")


def test_bad_arguments_are_usage_errors():
    for args in (
        ["events", "list", "--since", "last tuesday"],
        ["events", "list", "--since", "0001-01-01T00:00:00+14:00"],
        ["events", "list", "--limit", "0"],
        ["events", "show", "²"],
        ["events", "show", "9" * 5000],
        ["events", "purge", "--older-than", "99999999999999w"],
        ["events", "replay"],
        ["nonsense"],
    ):
        assert_clear_failure(invoke(*args), code=2)


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(monkeypatch, tmp_path):
    from worker.ops import event_log

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(event_log, "list_events", broken)
    url = f"sqlite:///{tmp_path / 'callpush.db'}"
    upgrade_to_head(url)
    result = invoke("events", "list", database_url=url)
    assert_clear_failure(result, "unexpected error (KeyError", "callpush --debug")
    debug = CliRunner().invoke(
        main, ["--debug", "events", "list"], env={"CALLPUSH_DATABASE_URL": url}
    )
    assert isinstance(debug.exception, KeyError)


# --- import -----------------------------------------------------------------------------------


@pytest.fixture
def embedded_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'callpush.db'}"


def test_import_of_a_missing_or_unreadable_file_is_a_usage_error(tmp_path, embedded_url):
    missing = invoke("events", "import", str(tmp_path / "nope.jsonl"), database_url=embedded_url)
    assert_clear_failure(missing, "No such file or directory", code=2)
    directory = invoke("events", "import", str(tmp_path), database_url=embedded_url)
    assert_clear_failure(directory, "Is a directory", code=2)
    locked = tmp_path / "locked.jsonl"
    locked.write_text("{}\n")
    locked.chmod(0)
    if os.access(locked, os.R_OK):  # root reads anything
        pytest.skip("running as root: every file is readable")
    assert_clear_failure(invoke("events", "import", str(locked)), "Permission denied", code=2)


def test_import_of_a_binary_file_reports_line_numbers(tmp_path, embedded_url):
    binary = tmp_path / "picture.png"
    binary.write_bytes(
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\xff\xd8\n"
        + json.dumps({"type": "call.updated", "call_cid": "default:after"}).encode()
        + b"\n"
    )
    result = invoke("events", "import", str(binary), database_url=embedded_url)
    assert result.exit_code == 1, result.output  # lines were rejected
    assert "Traceback" not in result.output
    assert "line 1: not UTF-8 text (byte 1 of the line)" in result.output
    assert "line 2: not JSON" in result.output  # "\x1a": text, but not JSON
    assert "line 3: not UTF-8 text" in result.output
    assert "imported 1, duplicates 0, invalid 3" in result.output


def test_import_of_a_huge_line_reports_it_and_goes_on(tmp_path, embedded_url):
    path = tmp_path / "huge.jsonl"
    with path.open("w") as out:
        out.write(json.dumps({"type": "call.updated", "call_cid": "default:1"}) + "\n")
        out.write('{"type": "call.updated", "pad": "' + "x" * (5 * 1024 * 1024) + '"}\n')
        out.write(json.dumps({"type": "call.updated", "call_cid": "default:3"}))  # no newline
    result = invoke(
        "events", "import", str(path), database_url=embedded_url, max_body_bytes="262144"
    )
    assert result.exit_code == 1, result.output  # the huge line was rejected
    assert f"line 2: longer than {4 * 262144 + 4096} bytes" in result.output
    assert "imported 2, duplicates 0, invalid 1" in result.output


# --- odd stored bodies in the text and JSON views ---------------------------------------------


def test_events_show_and_trace_render_odd_stored_text(tmp_path, embedded_url):
    upgrade_to_head(embedded_url)
    db = Database(embedded_url)
    seed = Seeder(db)
    forged = "call.ring\n2026-01-01 00:00:00 forged line\x1b[2J"
    odd = seed.event({"type": forged, "call_cid": "default:odd\u202e"}, reason="bad \x1b[31m")
    lone = seed.event(ring_body("default:odd\u202e", "alice", ["bob"]))
    deep = seed.event({"type": "call.updated", "call_cid": "default:odd\u202e"})
    with db.transaction() as session:
        session.get(WebhookEvent, lone).body = '{"type": "call.ring", "x": "\\ud800\\u2028"}'
        session.get(WebhookEvent, deep).body = "[" * 100_000 + "]" * 100_000
    db.dispose()

    listing = invoke("events", "list", database_url=embedded_url)
    assert listing.exit_code == 0, listing.output
    assert "call.ring\\n2026-01-01 00:00:00 forged line\\x1b[2J" in listing.output
    assert "\x1b" not in listing.output and "\u202e" not in listing.output

    shown = invoke("events", "show", str(odd), database_url=embedded_url)
    assert shown.exit_code == 0 and "bad \\x1b[31m" in shown.output

    as_json = invoke("events", "show", str(lone), "--json", database_url=embedded_url)
    assert as_json.exit_code == 0, as_json.output
    assert "\\ud800\\u2028" in as_json.output
    assert json.loads(as_json.stdout)["body"]["x"] == "\ud800\u2028"

    too_deep = invoke("events", "show", str(deep), "--json", database_url=embedded_url)
    assert too_deep.exit_code == 0 and json.loads(too_deep.stdout)["body"].startswith("[[[")

    trace = invoke("trace", "default:odd\u202e", database_url=embedded_url)
    assert trace.exit_code == 0, trace.output
    assert trace.stdout.count("\n") == 4  # the header and three webhooks, one line each
    assert "\x1b" not in trace.output and "default:odd\\u202e" in trace.output


def test_simulate_against_nothing_listening_is_a_message(embedded_url):
    result = invoke(
        "simulate", "ring", "--url", "http://127.0.0.1:1/webhooks/stream", database_url=embedded_url
    )
    assert_clear_failure(result, "--url http://127.0.0.1:1/webhooks/stream: ConnectionError")


def test_event_ids_out_of_range_are_usage_errors(embedded_url):
    for args in (["events", "show", "9223372036854775808"], ["events", "replay", "0"]):
        assert_clear_failure(
            invoke(*args, database_url=embedded_url), "is not in the range", code=2
        )


@pytest.mark.services
def test_a_rabbitmq_that_refuses_the_connection_is_a_broker_message(rabbitmq_server_url):
    """py-amqp's connection errors (here RabbitMQ's 530 for a vhost it does not have) are the
    broker's problem, as Redis's connection errors are."""
    import amqp
    from kombu.utils.url import url_to_parts

    from worker.commands.errors import describe_error
    from worker.foundation.settings import Settings

    parts = url_to_parts(rabbitmq_server_url)
    url = f"amqp://{parts.username}:{parts.password}@{parts.hostname}:{parts.port}/no_such_vhost"
    connection = amqp.Connection(
        f"{parts.hostname}:{parts.port}",
        userid=parts.username,
        password=parts.password,
        virtual_host="no_such_vhost",
        connect_timeout=2,
    )
    with pytest.raises(amqp.exceptions.ConnectionError) as refused:
        connection.connect()
    message = describe_error(refused.value, Settings(broker_url=url))
    assert message.startswith("broker_url amqp://guest:***@127.0.0.1:5672/no_such_vhost: ")
    assert "cannot reach the broker" in message and "no_such_vhost not found" in message

"""`callpush` as a real process: exit statuses, what goes to stdout and to stderr, and never a
traceback for a situation an operator runs into (no database yet, a database server that is
down, a broker that is down, bad arguments, rejected import lines)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.processes import callpush_command
from worker.stream import samples as sample_events


def callpush(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CALLPUSH_")}
    return subprocess.run(
        [*callpush_command(), *args],
        env=clean | env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["events", "list"],
        ["events", "show", "1"],
        ["trace", "default:1"],
        ["devices", "list"],
        ["users", "show", "--user", "bob"],
        ["db", "current"],
        ["devices", "remove", "--token", "0123abcd"],  # removes from what is there: nothing
    ],
)
def test_a_read_command_never_creates_the_sqlite_file(tmp_path, args):
    result = callpush(*args, cwd=tmp_path)  # the default database_url: ./callpush.db
    assert result.returncode == 1, result
    assert_no_traceback(result)
    assert result.stdout == ""
    missing = tmp_path / "callpush.db"
    assert f"there is no database file {missing}" in result.stderr
    assert "`callpush db upgrade`" in result.stderr
    assert not missing.exists()


def test_read_commands_name_the_database_they_read(tmp_path):
    url = f"sqlite:///{tmp_path / 'callpush.db'}"
    assert callpush("db", "upgrade", cwd=tmp_path, CALLPUSH_DATABASE_URL=url).returncode == 0
    result = callpush("events", "list", cwd=tmp_path, CALLPUSH_DATABASE_URL=url)
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"database: {url} ({tmp_path / 'callpush.db'})\n"
    assert result.stdout == "(no events)\n"


def test_a_database_server_that_is_down_is_one_line_with_the_password_hidden(tmp_path):
    url = "postgresql+psycopg://callpush:s3cret-pw@127.0.0.1:1/callpush"
    result = callpush("events", "list", cwd=tmp_path, CALLPUSH_DATABASE_URL=url)
    assert result.returncode == 1
    assert_no_traceback(result)
    assert "s3cret-pw" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == "database: postgresql+psycopg://callpush:***@127.0.0.1:1/callpush"
    assert lines[1].startswith("Error: database_url postgresql+psycopg://callpush:***@")
    assert "Connection refused" in lines[1] and len(lines) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["events", "list", "--since", "yesterday"], "Invalid value for '--since'"),
        (["events", "show", "abc"], "Invalid value for 'EVENT_ID'"),
        (["events", "replay", "1", "--limit", "5"], "select events for --failed only"),
        (["simulate", "accept", "--call", "no-colon"], "is not a call id such as default:123"),
        (["events", "import"], "Missing argument 'FILE'"),
    ],
)
def test_bad_arguments_are_a_usage_message(tmp_path, args, message):
    result = callpush(*args, cwd=tmp_path)
    assert result.returncode == 2, result
    assert_no_traceback(result)
    assert message in result.stderr


def test_a_database_file_that_cannot_be_created_is_one_line(tmp_path):
    url = "sqlite:////nonexistent-dir/callpush.db"
    result = callpush("db", "upgrade", cwd=tmp_path, CALLPUSH_DATABASE_URL=url)
    assert result.returncode == 1
    assert_no_traceback(result)
    assert result.stderr.splitlines() == [
        f"Error: upgrade failed: database_url {url}: unable to open database file"
    ]


# --- events import: progress on stderr, the summary on stdout, the exit status ----------------


def write_import(path: Path, good: int, bad: int) -> None:
    with path.open("w") as out:
        for n in range(good):
            event = sample_events.call_event("call.updated", f"default:imp-{n}", "bob")
            out.write(json.dumps(event) + "\n")
        for _ in range(bad):
            out.write("{not json\n")


def test_import_shows_progress_only_on_a_terminal_or_when_asked(tmp_path):
    url = f"sqlite:///{tmp_path / 'callpush.db'}"
    lines = tmp_path / "events.jsonl"
    write_import(lines, 1200, 0)
    quiet = callpush("events", "import", str(lines), cwd=tmp_path, CALLPUSH_DATABASE_URL=url)
    assert quiet.returncode == 0, quiet.stderr
    assert "importing" not in quiet.stderr  # stderr is a pipe here, not a terminal
    assert quiet.stdout == "imported 1200, duplicates 0, invalid 0; 0 processed here\n"

    again = callpush(
        "events", "import", str(lines), "--progress", cwd=tmp_path, CALLPUSH_DATABASE_URL=url
    )
    assert again.returncode == 0, again.stderr
    progress = [line for line in again.stderr.splitlines() if line.startswith("importing")]
    assert progress, again.stderr
    assert progress[-1].startswith("importing  1,200/1,200 lines  100%")
    assert again.stdout == "imported 0, duplicates 1200, invalid 0; 0 processed here\n"


def test_import_exits_1_when_lines_were_rejected(tmp_path):
    url = f"sqlite:///{tmp_path / 'callpush.db'}"
    lines = tmp_path / "events.jsonl"
    write_import(lines, 3, 2)
    result = callpush("events", "import", str(lines), cwd=tmp_path, CALLPUSH_DATABASE_URL=url)
    assert result.returncode == 1
    assert_no_traceback(result)
    assert result.stdout == "imported 3, duplicates 0, invalid 2; 0 processed here\n"
    assert "line 4: not JSON (JSONDecodeError)" in result.stderr
    assert "line 5: not JSON (JSONDecodeError)" in result.stderr
    assert "2 line(s) rejected (not imported)" in result.stderr


@pytest.mark.services
def test_import_with_the_broker_down_stores_says_so_and_exits_1(tmp_path, postgres_url):
    from worker.storage.migrations import upgrade_to_head

    upgrade_to_head(postgres_url)
    lines = tmp_path / "rings.jsonl"
    lines.write_text(
        "".join(json.dumps(sample_events.ring_event("alice", ["bob"])) + "\n" for _ in range(3))
    )
    result = callpush(
        "events",
        "import",
        str(lines),
        cwd=tmp_path,
        CALLPUSH_DATABASE_URL=postgres_url,
        CALLPUSH_BROKER_URL="redis://127.0.0.1:1/0",
        CALLPUSH_STREAM_API_KEY="key",
        CALLPUSH_STREAM_API_SECRET="secret-0123456789",
    )
    assert result.returncode == 1
    assert_no_traceback(result)
    assert result.stdout == "imported 3, duplicates 0, invalid 0; 0 queued\n"
    assert "3 event(s) stored but not queued" in result.stderr
    assert "the inbox sweeper queues them later" in result.stderr


def test_run_on_a_port_in_use_says_which(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        url = f"sqlite:///{tmp_path / 'callpush.db'}"
        result = callpush("run", "--port", str(port), cwd=tmp_path, CALLPUSH_DATABASE_URL=url)
    assert result.returncode == 1
    assert_no_traceback(result)
    assert f"Error: --host 127.0.0.1 --port {port}: the address is already in use" in result.stderr


def test_import_on_a_terminal_redraws_its_progress_line_on_stderr(tmp_path):
    import pty

    url = f"sqlite:///{tmp_path / 'callpush.db'}"
    lines = tmp_path / "events.jsonl"
    write_import(lines, 600, 0)
    controller, terminal = pty.openpty()  # stderr is a terminal, stdout a pipe
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CALLPUSH_")}
    try:
        process = subprocess.Popen(
            [*callpush_command(), "events", "import", str(lines)],
            env=clean | {"CALLPUSH_DATABASE_URL": url},
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=terminal,
            text=True,
        )
        os.close(terminal)
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the process closed the terminal (EIO on Linux)
                break
            if not chunk:
                break
            shown += chunk
        stdout, _ = process.communicate(timeout=120)
    finally:
        os.close(controller)
    assert process.returncode == 0
    text = shown.decode()
    assert "\rimporting  600/600 lines  100%" in text  # redrawn in place
    assert "Traceback" not in text
    assert stdout == "imported 600, duplicates 0, invalid 0; 0 processed here\n"

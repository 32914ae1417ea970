"""Reading an import file (worker.intake.file_import.read_lines): one item per line, in bounded
memory, whatever the file holds.  Storing the lines is tested through the CLI
(tests/worker/commands/test_events_cli.py)."""

from __future__ import annotations

import io
import tracemalloc

import pytest

from worker.intake.file_import import InvalidLine, max_line_bytes, read_lines


def items(data: bytes, max_bytes: int = 100) -> list[str | InvalidLine]:
    return list(read_lines(io.BytesIO(data), max_bytes))


def texts(found: list[str | InvalidLine]) -> list[str]:
    return [f"invalid: {item}" if isinstance(item, InvalidLine) else item for item in found]


def test_lines_with_and_without_a_final_newline():
    assert texts(items(b'{"a": 1}\n\n{"b": "\xc3\xa9"}\r\n')) == ['{"a": 1}', "", '{"b": "é"}\r']
    assert texts(items(b"one\ntwo")) == ["one", "two"]
    assert items(b"") == []
    assert texts(items(b"\xef\xbb\xbfwith a BOM\nline")) == ["with a BOM", "line"]


def test_a_line_that_is_not_utf8_is_numbered_and_skipped():
    found = texts(items(b"ok\n\x89PNG\r\n\x1a\n\x00\xff\xfe\nok again\n"))
    assert found == [
        "ok",
        "invalid: not UTF-8 text (byte 1 of the line)",
        "\x1a",
        "invalid: not UTF-8 text (byte 2 of the line)",
        "ok again",
    ]


def test_a_line_longer_than_the_cap_is_skipped_and_the_next_ones_still_read():
    data = b"short\n" + b"x" * 1000 + b"\nafter\n" + b"y" * 101
    assert texts(items(data, max_bytes=100)) == [
        "short",
        "invalid: longer than 100 bytes",
        "after",
        "invalid: longer than 100 bytes",
    ]
    assert texts(items(b"z" * 100, max_bytes=100)) == ["z" * 100]  # exactly the cap is fine


class EndlessLine(io.RawIOBase):
    """``size`` bytes of one line, made as they are read (a file too big to hold)."""

    def __init__(self, size: int, then: bytes) -> None:
        self.left, self.then = size, then

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if self.left <= 0:
            n = min(len(buffer), len(self.then))
            buffer[:n], self.then = self.then[:n], self.then[n:]
            return n
        n = min(len(buffer), self.left)
        buffer[:n] = b"a" * n
        self.left -= n
        return n


def test_a_huge_line_is_never_held_in_memory():
    cap = max_line_bytes(64 * 1024)  # max_body_bytes = 64 KiB: a cap of about 260 KB
    stream = io.BufferedReader(EndlessLine(200 * 1024 * 1024, b'\n{"type": "x"}\n'))
    tracemalloc.start()
    try:
        found = texts(list(read_lines(stream, cap)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert found == [f"invalid: longer than {cap} bytes", '{"type": "x"}']
    assert peak < 4 * cap, peak  # 200 MB read; never more than a few times the cap held


# --- storing in batches: the same outcome as one line at a time --------------------------------


def _import_file(url: str, lines: list[str], batch_lines: int):
    from sqlalchemy import select

    from tests.worker.recording_handoff import RecordingHandoff
    from worker.intake.file_import import import_lines
    from worker.storage.database import Database
    from worker.storage.migrations import upgrade_to_head
    from worker.storage.models import WebhookEvent

    upgrade_to_head(url)
    db = Database(url)
    handoff = RecordingHandoff()
    dispatched = handoff.events
    try:
        report = import_lines(
            db,
            iter(lines),
            "app-key",
            handoff,
            max_bytes=64 * 1024,
            batch_lines=batch_lines,
        )
        with db.transaction() as session:
            rows = [
                (r.id, r.webhook_id, r.event_type, r.call_cid, r.body, r.status)
                for r in session.scalars(select(WebhookEvent).order_by(WebhookEvent.id))
            ]
    finally:
        db.dispose()
    return report, rows, dispatched


def _tricky_lines() -> list[str]:
    import json

    from worker.stream import samples as sample_events

    ring = sample_events.ring_event("alice", ["bob"], call_id="c1")
    accepted = sample_events.call_event("call.accepted", "default:c1", "bob")
    no_call = {"type": "custom.thing", "n": 1}
    return [
        json.dumps(ring),
        json.dumps(ring, indent=1),  # the same event re-serialised: a duplicate
        json.dumps({"webhook_id": "wh-1", "body": accepted}),
        json.dumps({"webhook_id": "wh-1", "body": {**accepted, "x": 1}}),  # same id: duplicate
        "{not json",
        json.dumps(no_call),
        json.dumps(no_call),  # no call: the same text is a duplicate
        json.dumps({**no_call, "n": 2}),
        json.dumps(sample_events.call_event("call.ended", "default:c1", "alice")),
        "",
        json.dumps({"body": json.dumps(ring)}),  # the ring again, in an envelope
    ]


def test_every_batch_size_stores_what_one_line_at_a_time_stores(tmp_path):
    outcomes = []
    lines = _tricky_lines()  # once: the sample events carry the time they were made
    for size in (1, 2, 3, 500):
        url = f"sqlite:///{tmp_path / f'b{size}.db'}"
        report, rows, dispatched = _import_file(url, lines, size)
        counts = (report.imported, report.duplicates, report.invalid, report.problems)
        stored = [row[1:] for row in rows]  # without the id
        outcomes.append((counts, stored, [event_type for _, event_type in dispatched]))
        # Dispatched in the file's order, each a stored id.
        assert [event_id for event_id, _ in dispatched] == sorted(
            event_id for event_id, _ in dispatched
        )
    assert all(outcome == outcomes[0] for outcome in outcomes), outcomes
    counts, stored, _ = outcomes[0]
    assert counts == (5, 4, 1, [(5, "not JSON (JSONDecodeError)")])
    assert [(webhook_id[:7], event_type) for webhook_id, event_type, *_ in stored] == [
        ("sha256:", "call.ring"),
        ("wh-1", "call.accepted"),
        ("sha256:", "custom.thing"),
        ("sha256:", "custom.thing"),
        ("sha256:", "call.ended"),
    ]


def test_a_second_import_finds_every_line_stored_in_earlier_batches(tmp_path):
    url = f"sqlite:///{tmp_path / 'again.db'}"
    lines = _tricky_lines()
    _import_file(url, lines, 2)
    report, rows, dispatched = _import_file(url, lines, 3)
    assert (report.imported, report.duplicates, report.invalid) == (0, 9, 1)
    assert len(rows) == 5 and dispatched == []


@pytest.mark.services
def test_batches_on_postgresql_store_what_sqlite_stores(tmp_path, postgres_url):
    lines = _tricky_lines()
    _, on_sqlite, _ = _import_file(f"sqlite:///{tmp_path / 's.db'}", lines, 3)
    _, on_postgres, _ = _import_file(postgres_url, lines, 3)
    assert [row[1:] for row in on_postgres] == [row[1:] for row in on_sqlite]
    again, _, _ = _import_file(postgres_url, lines, 500)
    assert (again.imported, again.duplicates) == (0, 9)

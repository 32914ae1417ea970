"""Reading an import file (worker.event_import.read_lines): one item per line, in bounded
memory, whatever the file holds.  Storing the lines is tested through the CLI
(tests/worker/commands/test_events_cli.py)."""

from __future__ import annotations

import io
import tracemalloc

from worker.event_import import InvalidLine, max_line_bytes, read_lines


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

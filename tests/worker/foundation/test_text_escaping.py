"""worker.foundation.text_escaping: outside text made safe for a log line, a terminal, a JSON
document."""

from __future__ import annotations

import json

import pytest

from worker.foundation.text_escaping import (
    escape_controls,
    escape_unsafe_in_json,
    unstorable_reason,
)

FORGED = "call.ring\n2026-01-01 00:00:00,000 INFO callpush.admin: admin token accepted"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text, tabs\tand ünïcödé", "plain text, tabs\tand ünïcödé"),
        (FORGED, FORGED.replace("\n", "\\n")),
        ("a\r\nb", "a\\r\\nb"),
        ("\x1b[2J\x1b[31mred", "\\x1b[2J\\x1b[31mred"),
        ("nul\x00 del\x7f csi\x9b nel\x85", "nul\\x00 del\\x7f csi\\x9b nel\\x85"),
        ("line\u2028sep\u2029para", "line\\u2028sep\\u2029para"),
        ("abc\u202edcba\u2066x\u2069", "abc\\u202edcba\\u2066x\\u2069"),
        ("lone \ud800 and \udfff", "lone \\ud800 and \\udfff"),
    ],
)
def test_escape_controls_keeps_one_printable_line(text, expected):
    escaped = escape_controls(text)
    assert escaped == expected
    assert len(escaped.splitlines()) <= 1
    escaped.encode("utf-8")  # never raises


def test_escape_unsafe_in_json_keeps_the_document_equal():
    document = {"a": "x\u2028y\x85z\ud800", "\u202e": ["\x1b", "é", "😀"]}
    text = escape_unsafe_in_json(json.dumps(document, ensure_ascii=False))
    text.encode("utf-8")
    assert len(text.splitlines()) == 1
    assert json.loads(text) == document
    assert "é" in text and "😀" in text  # readable text stays readable


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("fine: ünïcödé \x1b\n", None),
        ("a\x00b", "contains a NUL character"),
        ("a\udc80b", "is not valid Unicode (it holds a lone surrogate)"),
    ],
)
def test_unstorable_reason(text, reason):
    assert unstorable_reason(text) == reason

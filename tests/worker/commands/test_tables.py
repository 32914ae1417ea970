"""Terminal tables: columns as wide as their widest cell, whatever the data."""

from __future__ import annotations

from worker.commands.tables import format_table


def test_columns_fit_their_longest_cell():
    lines = format_table(
        ["ID", "TYPE", "CALL"],
        [
            ["7", "call.ring", "default:1"],
            ["1234567", "call.session_participant_joined", "livestream:" + "x" * 40],
        ],
        right=frozenset({0}),
    )
    # Every row's third column starts where the header's does.
    start = lines[0].index("CALL")
    assert [line[start - 2 : start] for line in lines] == ["  ", "  ", "  "]
    assert lines[1].split()[0] == "7" and lines[1].startswith("      7")
    assert lines[2][start:] == "livestream:" + "x" * 40


def test_wide_characters_and_escapes_keep_the_columns():
    lines = format_table(["USER", "STATE"], [["李雷", "active"], ["bob\n\x1b[2J", "active"]])
    assert "\x1b" not in "".join(lines) and "\n" not in "".join(lines)
    assert lines[1].endswith("active") and lines[2].endswith("active")
    # 李雷 is two characters but four terminal columns: "active" starts in the same column.
    assert lines[1].index("active") + 2 == lines[2].index("active")
    assert lines[0].index("STATE") == lines[2].index("active")

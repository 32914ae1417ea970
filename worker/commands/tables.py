"""Tables for the terminal: each column as wide as its widest cell, so a long call id or event
type shifts its column instead of breaking the rows' alignment."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import click

from worker.foundation.text_escaping import escape_controls


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: frozenset[int] = frozenset()
) -> list[str]:
    """The lines of a table; the columns numbered in ``right`` are right-aligned (numbers).
    Cells are escaped first (stored data may hold newlines or terminal escapes), so widths
    count what is shown.  The last column is not padded."""
    shown = [[escape_controls(str(cell)) for cell in row] for row in rows]
    table = [list(headers), *shown]
    widths = [max(_width(row[i]) for row in table) for i in range(len(headers))]
    lines = []
    for row in table:
        cells = []
        for i, cell in enumerate(row):
            padding = " " * (widths[i] - _width(cell))
            cells.append(padding + cell if i in right else cell + padding)
        lines.append("  ".join(cells).rstrip())
    return lines


def _width(text: str) -> int:
    """Columns the text takes on a terminal: East Asian wide characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def echo_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: frozenset[int] = frozenset()
) -> None:
    for line in format_table(headers, rows, right):
        click.echo(line)

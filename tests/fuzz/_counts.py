"""Examples run per fuzz test (written out by conftest.py when FUZZ_COUNTS is set)."""

from __future__ import annotations

from collections import Counter

CASES: Counter[str] = Counter()


def count(name: str) -> None:
    CASES[name] += 1

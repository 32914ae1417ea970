"""Hypothesis strategies shared by the fuzz tests: JSON of every shape, and mutations of a
valid call.ring."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import strategies as st

# Values that have tripped JSON-to-database paths elsewhere: NUL, lone surrogates (only as
# JSON escapes: they cannot be encoded as UTF-8), huge numbers, long strings.
NASTY_STRINGS = st.sampled_from(
    ["", " ", "\x00", "default:\x00", "a" * 300, "x" * 5000, "🙂" * 70, ":", "a:b:c", "\u202e"]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | NASTY_STRINGS
)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=25,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (keys / indexes) into a JSON document, the root excluded."""
    found: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for key, child in value.items():
            found.append((*prefix, key))
            found += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.append((*prefix, index))
            found += paths(child, (*prefix, index))
    return found


def replaced(document: Any, path: tuple[Any, ...], value: Any, delete: bool = False) -> Any:
    """A deep copy of ``document`` with the value at ``path`` replaced (or deleted)."""
    result = copy.deepcopy(document)
    parent = result
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return result


def nested(depth: int, kind: str) -> bytes:
    """Deeply nested JSON: ``[[[...]]]`` or ``{"a":{"a":...}}``, optionally inside an event."""
    inner = "[" * depth + "]" * depth if kind == "list" else '{"a":' * depth + "1" + "}" * depth
    if kind == "in-event":
        inner = '{"type":"call.ring","call_cid":"default:x","custom":' + inner + "}"
    return inner.encode()


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()

"""Text that came from outside (webhook fields, stored bodies, operators' input), made safe to put
on one log line, on a terminal, or in a JSON document we write.

Three hazards, each with one function:

- Line forgery and terminal escapes: a field holding ``\\n`` or ``\\r`` starts what looks like a
  new log line; ESC (``\\x1b[...``) and the C1 controls drive the terminal that shows it; the
  Unicode line separators (U+2028/2029, NEL) end a line for many readers; the bidirectional
  overrides reorder what is shown (https://trojansource.codes/).  :func:`escape_controls` writes
  each of them as a visible escape (``\\n``, ``\\x1b``, ``\\u202e``).
- Lone surrogates (``"\\ud800"``): JSON allows them as escapes, so ``json.loads`` returns them,
  but they cannot be encoded as UTF-8, so writing one to a response, a terminal or PostgreSQL
  raises.  Both escape functions turn them into escapes too.
- NUL: PostgreSQL refuses it in text (https://www.postgresql.org/docs/current/datatype-character.html).
  :func:`unstorable_reason` names the problem so input can be refused with a 4xx.
"""

from __future__ import annotations

import re

# C0 controls (tab aside: harmless on one line), DEL and the C1 controls, NEL included.
_CONTROLS = "\x00-\x08\x0a-\x1f\x7f-\x9f"
# Line and paragraph separators; bidirectional embeddings, overrides and isolates.
_LAYOUT = "\u2028\u2029\u202a-\u202e\u2066-\u2069"
_SURROGATES = "\ud800-\udfff"

_UNSAFE_TEXT = re.compile(f"[{_CONTROLS}{_LAYOUT}{_SURROGATES}]")
# json.dumps escapes the C0 controls itself; these it writes raw (with ensure_ascii=False).
_UNSAFE_IN_JSON = re.compile(f"[\x7f-\x9f{_LAYOUT}{_SURROGATES}]")
_UNSTORABLE = re.compile(f"[\x00{_SURROGATES}]")

_SHORT = {"\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    code = ord(char)
    return _SHORT.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def escape_controls(text: str) -> str:
    """``text`` on one line, with nothing that moves the cursor, reorders or cannot be encoded:
    for log lines and terminal output."""
    return _UNSAFE_TEXT.sub(_escape, text)


def escape_unsafe_in_json(document: str) -> str:
    """A JSON document written with ``ensure_ascii=False``, with the characters that break a
    line-oriented reader or UTF-8 written as ``\\uXXXX``.  They can only occur inside JSON
    strings, where that escape means the same character, so the document stays equal."""
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group(0)):04x}", document)


def unstorable_reason(text: str) -> str | None:
    """Why ``text`` cannot be stored or compared in the database (None when it can)."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    if found.group(0) == "\x00":
        return "contains a NUL character"
    return "is not valid Unicode (it holds a lone surrogate)"

"""What operators send to the admin API and the dashboard, checked before it reaches the database.

Every query, form and path value must be text the database can compare (no NUL, no lone
surrogate); numbers are ASCII digits in range (``int()`` also takes ``"²"`` and ``"١٢"``, and
refuses more than 4,300 digits); a JSON body may not nest deeper than Python's parser can.  Each
problem is an :class:`InvalidInput` naming the field, which the blueprints answer with a 400.
"""

from __future__ import annotations

import re
from typing import Any

from flask import request

from worker.text_escaping import unstorable_reason

_DIGITS = re.compile(r"[0-9]{1,19}")


class InvalidInput(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def check_text_fields() -> None:
    """Refuse a request whose path, query or form holds text the database cannot take."""
    sources: list[tuple[str, Any]] = [*(request.view_args or {}).items()]
    sources += list(request.args.items(multi=True))
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        sources += list(request.form.items(multi=True))
    for name, value in sources:
        for text in (name, value):
            reason = unstorable_reason(text) if isinstance(text, str) else None
            if reason is not None:
                shown = name if unstorable_reason(name) is None else "a field name"
                raise InvalidInput(shown, f"{shown} {reason}")


def bounded_int(value: Any, name: str, minimum: int, maximum: int) -> int:
    """``value`` (text of ASCII digits, or a JSON integer) as an int within the bounds."""
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        number = None
    if number is None or not minimum <= number <= maximum:
        raise InvalidInput(name, f"{name} must be an integer from {minimum} to {maximum}")
    return number


def json_body() -> Any:
    """The request's JSON body, or None when it is not JSON.  A body nested too deep for the
    parser is refused rather than crashing it."""
    try:
        return request.get_json(force=True, silent=True)
    except RecursionError:
        raise InvalidInput("body", "the body is nested too deeply") from None


def json_text_problem(document: Any, path: str = "body", depth: int = 0) -> InvalidInput | None:
    """The first string (key or value) of a parsed JSON document the database cannot take."""
    if isinstance(document, str):
        reason = unstorable_reason(document)
        return InvalidInput(path, f"{path} {reason}") if reason else None
    if depth > 32:
        return InvalidInput(path, f"{path} is nested too deeply")
    items: list[tuple[str, Any]] = []
    if isinstance(document, dict):
        for key, value in document.items():
            reason = unstorable_reason(key)
            if reason:
                return InvalidInput(path, f"a field name of {path} {reason}")
            items.append((key, value))
    elif isinstance(document, list):
        items = [(str(index), value) for index, value in enumerate(document)]
    for key, value in items:
        problem = json_text_problem(value, key if depth == 0 else f"{path}.{key}", depth + 1)
        if problem is not None:
            return problem
    return None

"""What operators send to the admin API and the dashboard, checked before it reaches the database.

Every value compared with stored text must be text the database can take (no NUL, no lone
surrogate); numbers are ASCII digits in range (``int()`` also takes ``"²"`` and ``"١٢"``, and
refuses more than 4,300 digits); a JSON body may not nest deeper than Python's parser can.  Each
problem is an :class:`InvalidInput` naming the field, which the blueprints answer with a 400.
Fields nobody reads are ignored, as they always were.
"""

from __future__ import annotations

import re
from typing import Any

from flask import request

from worker.foundation.text_escaping import unstorable_reason

_DIGITS = re.compile(r"[0-9]{1,19}")
MAX_JSON_DEPTH = 32
# As long as a stored user id can be (devices.user_id, deliveries.user_id).
MAX_USER_ID = 255


class InvalidInput(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def check_query() -> None:
    """Refuse a query string that is not UTF-8 (werkzeug decodes it strictly when
    ``request.args`` is first read, and would fail; gunicorn and waitress answer 400 to raw
    non-ASCII bytes themselves, other servers may pass them on), or that gives a parameter
    twice (which value would count is anybody's guess)."""
    try:
        request.query_string.decode()
    except UnicodeDecodeError:
        raise InvalidInput("query", "the query string is not UTF-8 (percent-encode it)") from None
    for name, values in request.args.lists():
        if len(values) > 1:
            raise InvalidInput(name, f"{name} is given {len(values)} times")


def stored_text(value: str, name: str) -> str:
    """``value`` of the field ``name``, which is compared with stored text: refused when the
    database cannot take it (a NUL, a lone surrogate)."""
    reason = unstorable_reason(value)
    if reason is not None:
        raise InvalidInput(name, f"{name} {reason}")
    return value


def user_id_text(value: str, name: str) -> str:
    """A user id to look up: storable text of at most MAX_USER_ID characters."""
    stored_text(value, name)
    if len(value) > MAX_USER_ID:
        raise InvalidInput(name, f"{name} is longer than {MAX_USER_ID} characters")
    return value


def bounded_int(value: Any, name: str, minimum: int, maximum: int) -> int:
    """``value`` (text of ASCII digits, or a JSON integer) as an int within the bounds."""
    number: int | None = None
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():  # JSON Schema: 2.0 is an integer
        number = int(value)
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


def json_text_problem(document: Any, field: str = "body", depth: int = 0) -> InvalidInput | None:
    """The first string (key or value) of a parsed JSON body that the database cannot take,
    named by its top-level field.  Nothing an operator sends nests deep: past MAX_JSON_DEPTH
    levels the field is refused too (and this walk stays far from Python's recursion limit)."""
    if isinstance(document, str):
        reason = unstorable_reason(document)
        return InvalidInput(field, f"{field} {reason}") if reason else None
    if depth > MAX_JSON_DEPTH:
        return InvalidInput(field, f"{field} is nested too deeply")
    items: list[tuple[str, Any]] = []
    if isinstance(document, dict):
        for key, value in document.items():
            reason = unstorable_reason(key)
            if reason:
                return InvalidInput(field, f"a field name in {field} {reason}")
            items.append((key if depth == 0 else field, value))
    elif isinstance(document, list):
        items = [(field, value) for value in document]
    for name, value in items:
        problem = json_text_problem(value, name, depth + 1)
        if problem is not None:
            return problem
    return None

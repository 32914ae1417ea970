"""The reason recorded when processing hits an error nobody planned for (a bug, a value no code
path expected).  Running it again would fail the same way, so the event (or fan-out chunk)
ends failed with this reason, once; the traceback is logged at ERROR beside it."""

from __future__ import annotations

PREFIX = "unexpected error"
MAX_REASON = 500


def unexpected_reason(error: BaseException) -> str:
    return f"{PREFIX}: {type(error).__name__}: {error}"[:MAX_REASON]


def is_unexpected_reason(reason: str | None) -> bool:
    return bool(reason) and str(reason).startswith(PREFIX)

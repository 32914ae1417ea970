"""The operators' credential: one admin token, shared by the admin API and the dashboard.

The token comes from the configuration (``current_app.config["CALLPUSH_ADMIN_TOKEN"]``, set
from the settings by ``create_app``); without one, both are switched off and answer 404.  Every
comparison is constant-time.  The dashboard's cookie does not hold the token: it holds an issue
time and an HMAC keyed with the token, so changing the token logs everybody out, and a cookie
leaked from a browser expires and never reveals the token.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

from flask import current_app

CONFIG_KEY = "CALLPUSH_ADMIN_TOKEN"
SESSION_SECONDS = 12 * 3600
# Clock skew tolerated between the web processes that issue and check a cookie.
FUTURE_SKEW_SECONDS = 60


def configured_token() -> str | None:
    """The admin token, or None when the admin API and dashboard are off."""
    value: Any = current_app.config.get(CONFIG_KEY)
    if value is not None and hasattr(value, "get_secret_value"):  # a pydantic SecretStr
        value = value.get_secret_value()
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()


def token_matches(presented: str, expected: str) -> bool:
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header ("" when there is none)."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _mac(token: str, purpose: str) -> str:
    return hmac.new(token.encode("utf-8"), purpose.encode("utf-8"), hashlib.sha256).hexdigest()


def new_session(token: str, now: float | None = None) -> str:
    issued = int(now if now is not None else time.time())
    return f"{issued}.{_mac(token, f'dashboard-session:{issued}')}"


def session_is_valid(cookie: str | None, token: str, now: float | None = None) -> bool:
    if not cookie:
        return False
    issued_text, _, mac = cookie.partition(".")
    if not issued_text.isdigit():
        return False
    issued = int(issued_text)
    moment = now if now is not None else time.time()
    if not issued - FUTURE_SKEW_SECONDS <= moment < issued + SESSION_SECONDS:
        return False
    return hmac.compare_digest(mac, _mac(token, f"dashboard-session:{issued}"))


def csrf_token(token: str, session: str) -> str:
    """The hidden field of the dashboard's forms: derived from the admin token and this session,
    so another site cannot forge a replay even if SameSite were not honoured."""
    return _mac(token, f"dashboard-csrf:{session}")


def csrf_is_valid(presented: str | None, token: str, session: str) -> bool:
    return hmac.compare_digest(
        (presented or "").encode("utf-8"), csrf_token(token, session).encode()
    )

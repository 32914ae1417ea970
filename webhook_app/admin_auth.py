"""The operators' credential: one admin token, shared by the admin API and the dashboard.

The token comes from the configuration (``current_app.config["CALLPUSH_ADMIN_TOKEN"]``, set
from the settings by :func:`install`); without one, both are switched off and answer 404.  Every
comparison is constant-time.  Failed attempts are throttled per client address
(webhook_app.access_throttle).  The dashboard's cookie does not hold the token: it names a
server-side session (worker.storage.dashboard_sessions) issued under an HMAC of the token, so
changing the token logs everybody out, logging out revokes the session, and a cookie leaked from
a browser never reveals the token.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta
from typing import Any

from flask import Flask, current_app, request

from webhook_app.access_throttle import FailureThrottle, client_key
from worker.foundation.settings import Settings

CONFIG_KEY = "CALLPUSH_ADMIN_TOKEN"
THROTTLE_KEY = "callpush.admin_throttle"
SESSION_LIFETIME = timedelta(hours=12)


def install(app: Flask, settings: Settings) -> None:
    """The token and the failure throttle of this app (one throttle per process)."""
    app.config[CONFIG_KEY] = settings.admin_token
    limits = settings.admin_throttle
    app.extensions[THROTTLE_KEY] = FailureThrottle(
        limits.max_failures, limits.window_seconds, limits.max_clients
    )


def configured_token() -> str | None:
    """The admin token, or None when the admin API and dashboard are off."""
    value: Any = current_app.config.get(CONFIG_KEY)
    if value is not None and hasattr(value, "get_secret_value"):  # a pydantic SecretStr
        value = value.get_secret_value()
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()


def _utf8(text: str) -> bytes:
    # surrogatepass: a header or form value can hold a lone surrogate, which is simply not the
    # token (an environment variable with undecodable bytes holds them too).
    return text.encode("utf-8", "surrogatepass")


def token_matches(presented: str, expected: str) -> bool:
    return hmac.compare_digest(_utf8(presented), _utf8(expected))


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header ("" when there is none)."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def throttle() -> FailureThrottle:
    found: FailureThrottle = current_app.extensions[THROTTLE_KEY]
    return found


def client() -> str:
    """The requesting client's address as throttled (behind ``trusted_proxies``, the address
    the proxies saw)."""
    return client_key(request.remote_addr)


def _mac(token: str, purpose: str) -> str:
    return hmac.new(_utf8(token), purpose.encode("utf-8"), hashlib.sha256).hexdigest()


def token_fingerprint(token: str) -> str:
    """Stored with each dashboard session: sessions issued under another token are refused."""
    return _mac(token, "dashboard-session")


def csrf_token(token: str, session: str) -> str:
    """The hidden field of the dashboard's forms: derived from the admin token and this session,
    so another site cannot forge a replay even if SameSite were not honoured."""
    return _mac(token, f"dashboard-csrf:{session}")


def csrf_is_valid(presented: str | None, token: str, session: str) -> bool:
    return hmac.compare_digest(_utf8(presented or ""), csrf_token(token, session).encode())

"""What a push token of each platform looks like, checked when it is registered.

* APNs device tokens are binary, sent as hex.  Today they are 32 bytes (64 hex characters), but
  Apple says their length varies and must not be hard-coded ("Registering your app with APNs",
  https://developer.apple.com/documentation/usernotifications/registering-your-app-with-apns),
  so any whole number of bytes from 16 to 100 is accepted: a generous ceiling that still keeps
  garbage out.
* FCM registration tokens are opaque URL-safe strings, typically ~150-200 characters such as
  ``<instance id>:APA91b<...>``.  Google documents no format, so the check is loose: the
  characters seen in real tokens (letters, digits, ``_``, ``-``, ``:``) and a length from 32 to
  512 (the column size).

A token that fails is refused with a 400 naming the field, rather than stored and rejected by
Apple or Google at the moment a phone should ring.
"""

from __future__ import annotations

import re

from worker.push.base import Platform

APNS_MIN_BYTES = 16
APNS_MAX_BYTES = 100
FCM_MIN_LENGTH = 32
FCM_MAX_LENGTH = 512

_HEX = re.compile(r"[0-9A-Fa-f]+")
_FCM = re.compile(r"[A-Za-z0-9_:\-]+")


def token_problem(platform: Platform, token: str) -> str | None:
    """Why ``token`` cannot be a ``platform`` push token, or None when it can."""
    if platform is Platform.APNS:
        if not _HEX.fullmatch(token):
            return "an APNs token must be hexadecimal (0-9, a-f)"
        if len(token) % 2:
            return "an APNs token must have an even number of hex digits (whole bytes)"
        if not APNS_MIN_BYTES * 2 <= len(token) <= APNS_MAX_BYTES * 2:
            return (
                f"an APNs token must be {APNS_MIN_BYTES * 2} to {APNS_MAX_BYTES * 2} hex digits "
                f"(today's are 64), not {len(token)}"
            )
        return None
    if not _FCM.fullmatch(token):
        return "an FCM token may only contain letters, digits, '_', '-' and ':'"
    if not FCM_MIN_LENGTH <= len(token) <= FCM_MAX_LENGTH:
        return f"an FCM token must be {FCM_MIN_LENGTH} to {FCM_MAX_LENGTH} characters long"
    return None

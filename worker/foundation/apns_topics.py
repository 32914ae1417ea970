"""APNs topics: an app's bundle id, and ``<bundle id>.voip`` for its PushKit (VoIP) pushes.

Apple: a bundle id "contains only alphanumeric characters (A-Z, a-z, and 0-9), hyphens (-), and
periods (.)", in reverse-DNS form
(https://developer.apple.com/documentation/bundleresources/information-property-list/cfbundleidentifier);
the apns-topic of a VoIP push is the bundle id with ``.voip`` appended
(https://developer.apple.com/documentation/usernotifications/sending-notification-requests-to-apns).
So a bundle id given as ``com.example.app.voip`` would make the VoIP topic
``com.example.app.voip.voip``, which APNs rejects (and whose DeviceTokenNotForTopic answer would
disable the token): such ids are refused, not silently rewritten.
"""

from __future__ import annotations

import re

VOIP_SUFFIX = ".voip"
MAX_BUNDLE_ID = 255  # devices.app_id's column size
_COMPONENT = re.compile(r"[A-Za-z0-9-]+")


def bundle_id_problem(value: str) -> str | None:
    """Why ``value`` is not a bundle id APNs can take as a topic base; None when it is."""
    if not value:
        return "is empty"
    if len(value) > MAX_BUNDLE_ID:
        return f"is longer than {MAX_BUNDLE_ID} characters"
    components = value.split(".")
    if not all(_COMPONENT.fullmatch(part) for part in components):
        return (
            "may contain only letters A-Z and a-z, digits, hyphens and periods, "
            "with no empty part between periods"
        )
    if len(components) < 2:
        return "must be in reverse-DNS form, e.g. com.example.app"
    if value.lower().endswith(VOIP_SUFFIX):
        return (
            f"ends in {VOIP_SUFFIX!r}: give the app's bundle id; callpush appends "
            f"{VOIP_SUFFIX!r} itself for VoIP pushes"
        )
    return None


def voip_topic(bundle_id: str) -> str:
    return f"{bundle_id}{VOIP_SUFFIX}"

"""The provider interface and its closed result vocabulary.

Modelled on mattermost-push-proxy's OK / REMOVE / FAIL: a provider turns whatever its SDK
answers into one of four results, so nothing above this layer ever sees an SDK response.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


class Platform(enum.StrEnum):
    APNS = "apns"
    FCM = "fcm"


class PushKind(enum.StrEnum):
    VOIP = "voip"  # APNs PushKit: apns-push-type voip, topic <bundle>.voip
    ALERT = "alert"  # APNs user-visible alert
    DATA = "data"  # FCM data-only message


@dataclass(frozen=True, slots=True)
class ProviderRef:
    """Which configured provider sends a message: a Stream app's named push provider (the
    device's ``push_provider_name``), or the platform's default provider ([apns] / [fcm])."""

    platform: Platform
    app: str | None = None  # api key of the Stream app that names the provider
    name: str | None = None  # None: the platform's default provider

    def describe(self) -> str:
        if self.name is None:
            return f"the default {self.platform.value} provider"
        return f"push provider {self.name!r} of app {self.app}"


class PushResult(enum.StrEnum):
    SENT = "sent"  # the provider accepted it
    TOKEN_INVALID = "token_invalid"  # the token is dead: disable it, never retry
    RETRY = "retry"  # transient (429, 5xx, timeout, connection): may be retried
    FAILED = "failed"  # permanent for this message (e.g. payload too large); token kept


@dataclass(frozen=True, slots=True)
class PushMessage:
    """One push to one device, already fully built by :mod:`worker.payloads`."""

    platform: Platform
    kind: PushKind
    token: str
    # APNs: the whole JSON body ({"aps": ..., "stream": ...}).  FCM: the ``data`` map (str->str).
    payload: dict[str, Any]
    # APNs only: apns-topic (bundle id, plus ".voip" for VoIP pushes).
    topic: str | None = None
    # APNs 10 (immediate) / 5 (power-considerate); FCM: 10 -> android.priority "high".
    priority: int = 10
    # Seconds the provider may hold the push for an offline device (0 = deliver now or never).
    time_to_live: int | None = None
    # APNs apns-collapse-id / FCM android.collapse_key.
    collapse_id: str | None = None
    # Stable per (event, device), so a provider-level retry can reuse it (APNs apns-id).
    message_id: str | None = None
    # The provider that sends it (PushSender routes on this); None = the platform's default.
    provider: ProviderRef | None = None


@dataclass(frozen=True, slots=True)
class PushOutcome:
    result: PushResult
    reason: str = ""  # provider's reason code, e.g. "Unregistered", "UNREGISTERED", "timeout"
    status_code: int | None = None  # HTTP status where there was one
    retry_after: float | None = None  # seconds, when the provider said so
    provider_message_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def sent(cls, provider_message_id: str | None = None) -> PushOutcome:
        return cls(PushResult.SENT, provider_message_id=provider_message_id)


# Told each answer as it arrives: (index of the message in the batch, its outcome).
AnswerCallback = Callable[[int, PushOutcome], None]


class PushProvider(Protocol):
    """Sends a batch concurrently; returns one outcome per message, in order.  Never raises for
    a per-message failure: a timeout or a broken connection is ``RETRY`` for that message.

    ``on_answer``, when given, is called (from any thread) as each answer arrives, before the
    batch is over, so the caller can record it at once: a process killed mid-batch then leaves
    unrecorded only what was still in flight.  It may miss a message (a batch that timed out as
    a whole); the returned list is complete."""

    name: str

    def send_batch(
        self, messages: Sequence[PushMessage], on_answer: AnswerCallback | None = None
    ) -> list[PushOutcome]: ...

    def close(self) -> None: ...


def redact_token(token: str) -> str:
    """Enough of a device token to find it in the registry, never the whole of it."""
    if len(token) <= 12:
        return token[:2] + "…"
    return f"{token[:6]}…{token[-4:]}"

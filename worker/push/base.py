"""The provider interface and its closed result vocabulary.

Modelled on mattermost-push-proxy's OK / REMOVE / FAIL: a provider turns whatever its SDK
answers into one of five results, so nothing above this layer ever sees an SDK response.

A push that got no answer is not always safe to send again.  APNs and FCM take no idempotency
key, so a request that may have reached them and is sent again may be delivered twice, and a
ring delivered twice rings twice: Stream's iOS SDK reports every VoIP push to CallKit as a new
call with a new UUID (https://github.com/GetStream/stream-video-swift/blob/8196aff7274afded5f2e1c54e6c0adc4226bc19e/Sources/StreamVideo/CallKit/CallKitService.swift#L222-L233)
and its Android SDK does not treat a second ring of the same call as busy
(https://github.com/GetStream/stream-video-android/blob/8fbaea45804cb3276b3dc41d6f8a55a07cfdf3b6/stream-video-android-core/src/main/kotlin/io/getstream/video/android/core/call/CallBusyHandler.kt#L38-L60).
A message marked ``at_most_once`` (every ring) is therefore answered ``UNCONFIRMED`` when it may
have arrived, and ``RETRY`` only when the provider certainly did not take it.
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
    # Transient, may be sent again.  For an ``at_most_once`` message only when the provider
    # certainly did not take it: a 429 or 5xx answer, or a request never written (connection
    # refused, DNS, connect timeout).  For other messages also a timeout or lost connection.
    RETRY = "retry"
    FAILED = "failed"  # permanent for this message (e.g. payload too large); token kept
    # ``at_most_once`` messages only: the request may have reached the provider but its answer
    # was lost (a timeout after writing it, the connection closed after writing it).  It may
    # have been delivered, so it is never sent again.
    UNCONFIRMED = "unconfirmed"


@dataclass(frozen=True, slots=True)
class PushMessage:
    """One push to one device, already fully built by :mod:`worker.delivery.payloads`."""

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
    # Never send this request twice (a ring): a provider does not resend it once it may have
    # reached the server, and answers UNCONFIRMED instead of RETRY when its answer is lost.
    at_most_once: bool = False


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


# Provider reasons meaning our credentials were refused, not the message or the device: an APNs
# .p8 key revoked or its JWT refused (Apple's "Handling notification responses from APNs" table,
# https://developer.apple.com/documentation/usernotifications/handling-notification-responses-from-apns),
# or FCM's service account refused (UNAUTHENTICATED after one token refresh, PERMISSION_DENIED,
# THIRD_PARTY_AUTH_ERROR: https://firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode) or
# its token refresh refused for good ("auth").  Nothing but an operator fixes these.
APNS_CREDENTIAL_REASONS = frozenset(
    {"InvalidProviderToken", "ExpiredProviderToken", "MissingProviderToken"}
)
FCM_CREDENTIAL_REASONS = frozenset(
    {"UNAUTHENTICATED", "PERMISSION_DENIED", "THIRD_PARTY_AUTH_ERROR", "auth"}
)


def credentials_refused(outcome: PushOutcome) -> bool:
    """The provider refused our credentials (so every push through it fails until fixed)."""
    return outcome.result is PushResult.FAILED and (
        outcome.reason in APNS_CREDENTIAL_REASONS or outcome.reason in FCM_CREDENTIAL_REASONS
    )


# Told each answer as it arrives: (index of the message in the batch, its outcome).
AnswerCallback = Callable[[int, PushOutcome], None]


class PushProvider(Protocol):
    """Sends a batch concurrently; returns one outcome per message, in order.  Never raises for
    a per-message failure: a timeout or a broken connection is ``RETRY`` for that message, or
    ``UNCONFIRMED`` for an ``at_most_once`` message the server may have received.

    ``on_answer``, when given, is called (from any thread) as each answer arrives, before the
    batch is over, so the caller can record it at once: a process killed mid-batch then leaves
    unrecorded only what was still in flight.  It may miss a message (a batch that timed out as
    a whole); the returned list is complete."""

    name: str

    def send_batch(
        self, messages: Sequence[PushMessage], on_answer: AnswerCallback | None = None
    ) -> list[PushOutcome]: ...

    def close(self) -> None: ...

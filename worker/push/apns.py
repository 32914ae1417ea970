"""APNs over HTTP/2 with aioapns 4.0: the provider (its repairs: worker/push/aioapns_repairs.py).

One aioapns client per process, built lazily inside the :class:`EventLoopThread` (the pool
captures the loop it was built in, docs/push-libraries.md §1), with token (.p8) authentication.
aioapns answers errors as results and has no timeout, so every send is wrapped in
``asyncio.wait_for`` and every answer is mapped to the closed :class:`PushResult` vocabulary
here: no aioapns object leaves this module or its repairs.

The connections themselves are aioapns's with its bugs repaired (worker/push/aioapns_repairs.py,
docs/push-libraries.md §1 "Pitfalls"): one JWT for all of a client's connections, and a record
of which requests APNs may have processed.  Stock aioapns resends every request whose connection
closed; an ``at_most_once`` message (a ring) that may have reached APNs is never resent, by the
pool or by anyone: it is answered ``UNCONFIRMED``.  Connection failures before writing stay
``RETRY``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import ssl
import uuid
from collections.abc import Coroutine, Sequence
from typing import Any

from aioapns import APNs, NotificationRequest, PushType
from aioapns.common import NotificationResult
from aioapns.connection import JWTAuthorizationHeaderProvider
from aioapns.exceptions import ConnectionClosed, MaxAttemptsExceeded
from aioapns.exceptions import ConnectionError as ApnsConnectionError
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from h2.exceptions import H2Error

from worker.foundation.logging_setup import redact_token
from worker.foundation.settings import ApnsSettings
from worker.push.aioapns_repairs import (
    AnswerLost,
    TrackedRequest,
    install_repairs,
)
from worker.push.base import (
    APNS_CREDENTIAL_REASONS,
    AnswerCallback,
    Platform,
    PushKind,
    PushMessage,
    PushOutcome,
    PushResult,
)
from worker.push.event_loop_thread import EventLoopThread

logger = logging.getLogger(__name__)

# Requests handed to aioapns at once.  Each one's timeout starts only once it holds a slot, so a
# bulk batch of thousands does not time out while queued behind the ~1.2k-2.5k/s a process can
# push (docs/push-libraries.md §1 "Throughput").  1000 = the stream slots of one APNs connection.
MAX_IN_FLIGHT = 1000
# Added to the per-message timeout for the caller's overall wait on a batch.
BATCH_GRACE_SECONDS = 2.0
# apns-id must be a UUID; other message ids are mapped to a stable one (same id -> same apns-id).
_APNS_ID_NAMESPACE = uuid.UUID("8f4d2a52-6c43-4c1e-9c5a-6f0e2b3c9d11")
_TOKEN_RE = re.compile(r"[0-9A-Za-z_-]+")

_TOKEN_INVALID_REASONS = frozenset({"Unregistered", "BadDeviceToken", "DeviceTokenNotForTopic"})
# Our credentials are wrong: nothing the message or the device can fix.
_CREDENTIAL_REASONS = APNS_CREDENTIAL_REASONS
_PUSH_TYPES = {PushKind.VOIP: PushType.VOIP, PushKind.ALERT: PushType.ALERT}


def apns_id_for(message_id: str | None) -> str:
    """The apns-id for a message: its id when that is a UUID, else a UUID derived from it."""
    if not message_id:
        return str(uuid.uuid4())
    try:
        return str(uuid.UUID(message_id))
    except ValueError:
        return str(uuid.uuid5(_APNS_ID_NAMESPACE, message_id))


def classify_result(status: str, reason: str | None, timestamp: int | None) -> PushOutcome:
    """Map an APNs answer to the closed vocabulary (Apple's status/reason table)."""
    reason = reason or ""
    try:
        code = int(status)
    except ValueError:
        return PushOutcome(PushResult.RETRY, reason=reason or "UnexpectedStatus")
    if code == 200:
        return PushOutcome(PushResult.SENT, status_code=code)
    extra: dict[str, Any] = {"timestamp": timestamp} if timestamp is not None else {}
    if code == 410 or (code == 400 and reason in _TOKEN_INVALID_REASONS):
        return PushOutcome(
            PushResult.TOKEN_INVALID, reason=reason or "Unregistered", status_code=code, extra=extra
        )
    if code == 429 or code >= 500:
        return PushOutcome(PushResult.RETRY, reason=reason or f"HTTP{code}", status_code=code)
    return PushOutcome(PushResult.FAILED, reason=reason or f"HTTP{code}", status_code=code)


def _read_key(settings: ApnsSettings) -> str:
    if settings.key_file is None:
        raise ValueError("APNs is not configured: apns.key_file is not set")
    pem = settings.key_file.read_text()
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except ValueError:
        raise ValueError(f"apns.key_file {settings.key_file} is not a PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"apns.key_file {settings.key_file} is not an ES256 (EC) key")
    return pem


def _ssl_context(settings: ApnsSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(
        cafile=str(settings.ca_file) if settings.ca_file is not None else None
    )
    # Apple negotiates h2 via ALPN; aioapns offers none (the server accepts prior knowledge).
    context.set_alpn_protocols(["h2"])
    return context


async def _reporting(
    send: Coroutine[Any, Any, PushOutcome],
    index: int,
    answers: list[PushOutcome | None],
    on_answer: AnswerCallback | None,
) -> PushOutcome:
    outcome = await send
    answers[index] = outcome
    if on_answer is not None:
        on_answer(index, outcome)
    return outcome


def _unanswered(message: PushMessage, reason: str) -> PushOutcome:
    """The outcome of a request that may have reached APNs but got no answer."""
    result = PushResult.UNCONFIRMED if message.at_most_once else PushResult.RETRY
    return PushOutcome(result, reason=reason)


class ApnsProvider:
    """Sends VoIP and alert pushes with one long-lived aioapns client per process."""

    name = "apns"

    def __init__(self, settings: ApnsSettings, *, loop_thread: EventLoopThread | None = None):
        self._settings = settings
        self._key = _read_key(settings)  # fail at start-up, not at the first push
        self._ssl_context = _ssl_context(settings)
        self._owns_loop = loop_thread is None
        self._loop_thread = loop_thread or EventLoopThread("callpush-apns")
        # Built inside the loop; rebuilt when the loop changes (after fork).
        self._client: APNs | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._in_flight: asyncio.Semaphore | None = None
        # Sign once now so a key that jwt cannot use fails here, with no key material logged.
        self._new_auth_provider().get_header()
        # The client is built now (in the loop that will use it, opening no connection), so a
        # worker is ready before its first ring; after a fork it is rebuilt in the new loop.
        self._loop_thread.run(self._prepare(), timeout=5)

    def send_batch(
        self, messages: Sequence[PushMessage], on_answer: AnswerCallback | None = None
    ) -> list[PushOutcome]:
        if not messages:
            return []
        rounds = math.ceil(len(messages) / MAX_IN_FLIGHT)
        bound = self._settings.timeout_seconds * rounds + BATCH_GRACE_SECONDS
        # Filled in the loop as answers arrive: what a batch cut short did get is kept.
        answers: list[PushOutcome | None] = [None] * len(messages)
        sending = self._send_all(list(messages), on_answer, answers)
        try:
            return self._loop_thread.run(sending, timeout=bound)
        except TimeoutError:
            logger.error("APNs batch of %d did not finish within %.1f s", len(messages), bound)
            reason = "timeout"
        except Exception:
            logger.exception("APNs batch of %d failed", len(messages))
            reason = "error"
        # The loop is still cancelling what it had in flight: an unanswered request may have been
        # written, so a ring among them is not sent again.
        return [
            answer or _unanswered(message, reason)
            for message, answer in zip(messages, answers, strict=True)
        ]

    def close(self) -> None:
        if self._client is not None and self._loop_thread.started:
            try:
                self._loop_thread.run(self._aclose(), timeout=5)
            except Exception:
                logger.warning("closing the APNs client failed", exc_info=True)
        self._client = None
        if self._owns_loop:
            self._loop_thread.stop()

    # -- inside the loop -------------------------------------------------------------------------

    async def _prepare(self) -> None:
        self._ensure_client()

    def _ensure_client(self) -> tuple[APNs, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if self._client is None or self._in_flight is None or self._client_loop is not loop:
            # First use, or a new loop after fork: the old client's sockets belong to the parent.
            self._client = self._build_client()
            self._client_loop = loop
            self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        return self._client, self._in_flight

    def _build_client(self) -> APNs:
        settings = self._settings
        client = APNs(
            key=self._key,
            key_id=settings.key_id,
            team_id=settings.team_id,
            topic=settings.bundle_id,
            use_sandbox=settings.use_sandbox,
            ssl_context=self._ssl_context,
            max_connections=settings.max_connections,
            err_func=self._on_error_result,
        )
        install_repairs(
            client, auth=self._new_auth_provider(), host=settings.host, port=settings.port
        )
        return client

    def _new_auth_provider(self) -> JWTAuthorizationHeaderProvider:
        settings = self._settings
        return JWTAuthorizationHeaderProvider(
            key=self._key, key_id=settings.key_id, team_id=settings.team_id
        )

    async def _send_all(
        self,
        messages: list[PushMessage],
        on_answer: AnswerCallback | None,
        answers: list[PushOutcome | None],
    ) -> list[PushOutcome]:
        try:
            client, in_flight = self._ensure_client()
        except Exception:
            logger.exception("APNs client could not be built")  # nothing was written
            return [PushOutcome(PushResult.RETRY, reason="error") for _ in messages]
        seen: set[str] = set()
        sends = []
        for index, message in enumerate(messages):
            apns_id = apns_id_for(message.message_id)
            if apns_id in seen:
                # aioapns keys in-flight requests by apns-id: a duplicate would orphan the first.
                apns_id = str(uuid.uuid4())
            seen.add(apns_id)
            send = self._send_one(client, in_flight, message, apns_id)
            sends.append(_reporting(send, index, answers, on_answer))
        return list(await asyncio.gather(*sends))

    async def _send_one(
        self, client: APNs, in_flight: asyncio.Semaphore, message: PushMessage, apns_id: str
    ) -> PushOutcome:
        token = redact_token(message.token)
        rejected = self._check(message)
        if rejected is not None:
            logger.warning("APNs push to %s not sent: %s", token, rejected.reason)
            return rejected
        request = TrackedRequest(
            device_token=message.token,
            message=message.payload,
            notification_id=apns_id,
            time_to_live=message.time_to_live,
            priority=message.priority,
            collapse_key=message.collapse_id,
            push_type=_PUSH_TYPES[message.kind],
            apns_topic=message.topic or self._default_topic(message.kind),
            at_most_once=message.at_most_once,
        )
        async with in_flight:
            try:
                result = await asyncio.wait_for(
                    client.send_notification(request), self._settings.timeout_seconds
                )
            except TimeoutError:
                # Not written: with no open connection the time went into failed connects
                # (aioapns retries them with 1 s sleeps), so the honest reason is the connection.
                written = request.in_doubt
                reason = "timeout" if written or client.pool.connections else "connection"
                return self._no_answer(token, message, reason, written)
            except AnswerLost as exc:
                logger.warning("APNs push to %s: answer lost (%s)", token, exc)
                return self._no_answer(token, message, "connection-lost", written=True)
            except (
                ApnsConnectionError,
                MaxAttemptsExceeded,
                ConnectionClosed,
                OSError,
                H2Error,
            ) as exc:
                logger.warning("APNs push to %s: connection error (%s)", token, type(exc).__name__)
                return self._no_answer(token, message, "connection", request.in_doubt)
            except Exception:
                logger.exception("APNs push to %s failed unexpectedly", token)
                return self._no_answer(token, message, "error", request.in_doubt)
        outcome = classify_result(result.status, result.description, result.timestamp)
        if outcome.result is PushResult.SENT:
            return PushOutcome(
                PushResult.SENT, status_code=outcome.status_code, provider_message_id=apns_id
            )
        self._log_outcome(token, outcome)
        return outcome

    @staticmethod
    def _no_answer(token: str, message: PushMessage, reason: str, written: bool) -> PushOutcome:
        """No answer: ``RETRY``, unless a ring was written (APNs may have delivered it)."""
        outcome = _unanswered(message, reason) if written else PushOutcome(PushResult.RETRY, reason)
        logger.warning("APNs push to %s: %s %s", token, outcome.result.value, reason)
        return outcome

    def _check(self, message: PushMessage) -> PushOutcome | None:
        if message.platform != Platform.APNS or message.kind not in _PUSH_TYPES:
            return PushOutcome(PushResult.FAILED, reason=f"UnsupportedKind:{message.kind}")
        if not _TOKEN_RE.fullmatch(message.token):
            # It would not even make a valid :path; APNs would say BadDeviceToken.
            return PushOutcome(
                PushResult.TOKEN_INVALID, reason="BadDeviceToken", extra={"local": True}
            )
        try:
            json.dumps(message.payload)
        except (TypeError, ValueError):
            return PushOutcome(PushResult.FAILED, reason="InvalidPayload")
        return None

    def _default_topic(self, kind: PushKind) -> str:
        bundle = self._settings.bundle_id
        return f"{bundle}.voip" if kind is PushKind.VOIP else bundle

    def _log_outcome(self, token: str, outcome: PushOutcome) -> None:
        if outcome.reason in _CREDENTIAL_REASONS:
            logger.error(
                "APNs rejected our provider token (%s): check apns.key_file, key_id %s, team_id %s",
                outcome.reason,
                self._settings.key_id,
                self._settings.team_id,
            )
        elif outcome.result is PushResult.TOKEN_INVALID:
            logger.info("APNs token %s is invalid: %s", token, outcome.reason)
        else:
            logger.warning(
                "APNs push to %s: %s %s (%s)",
                token,
                outcome.result.value,
                outcome.status_code,
                outcome.reason,
            )

    @staticmethod
    async def _on_error_result(request: NotificationRequest, result: NotificationResult) -> None:
        # Replaces aioapns's own ERROR log of every non-200, which prints the notification id
        # at ERROR for routine answers like 410; we log the classified outcome ourselves.
        logger.debug(
            "APNs answered %s %s for %s",
            result.status,
            result.description,
            redact_token(request.device_token),
        )

    async def _aclose(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        client.pool.close()
        # Give connection_lost a chance to run so the transports are really closed.
        for _ in range(100):
            if not client.pool.connections:
                break
            await asyncio.sleep(0.01)

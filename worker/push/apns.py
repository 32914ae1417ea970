"""APNs over HTTP/2 with aioapns 4.0: the only module that imports aioapns or h2.

One aioapns client per process, built lazily inside the :class:`EventLoopThread` (the pool captures
the loop it was built in, push-libraries.md §1), with token (.p8) authentication.  aioapns answers
errors as results and has no timeout, so every send is wrapped in ``asyncio.wait_for`` and every
answer is mapped to the closed :class:`PushResult` vocabulary here: no aioapns object leaves this
module.

:class:`_RobustProtocol` replaces aioapns's response handling, which has five bugs
(push-libraries.md §1 "Pitfalls", P1-P4; P5 found while writing this module):

* P1 a late answer to a request whose caller gave up (``wait_for`` cancelled its future) raised
  ``InvalidStateError`` inside ``data_received``, killing the connection and stranding every other
  request on it; ``connection_lost`` then raised on the next cancelled future and stopped half-way.
* P2 ``request_streams`` was only popped on error answers: one leaked entry per successful push.
* P3 an empty DATA frame made it ``json.loads(b"")`` and crash; an error body split over two DATA
  frames would have been parsed in halves.
* P4 after a GOAWAY the pool kept handing out the closing connection and ``send_headers`` raised
  h2's ``ProtocolError`` straight to the caller (the pool only retries ``ConnectionClosed``).
* P5 received DATA was never acknowledged, so the connection-level receive window (65,535 bytes)
  ran out after ~1,200 error answers (410 bodies are ~54 bytes); from then on the server cannot
  send any error body on that connection.  Reproduced: 1,500 x 410 on one connection.

It also shares one JWT provider per client: stock aioapns signs a new token for every new
connection, and Apple throttles token updates (TooManyProviderTokenUpdates).

And it writes requests itself, so it knows which ones APNs may have processed: a request is "in
doubt" from the moment it is written until its answer, unless the server says it was not
processed (RST_STREAM REFUSED_STREAM, or a GOAWAY whose last stream id is below it: RFC 9113
§8.7 and §6.8, https://www.rfc-editor.org/rfc/rfc9113#section-8.7).  Stock aioapns resends
every request whose connection closed; for an ``at_most_once`` message (a ring) one in doubt is
never resent, by the pool or by anyone: it is answered ``UNCONFIRMED``.  Connection failures
before writing stay ``RETRY``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import ssl
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ClassVar, NoReturn, cast

from aioapns import APNs, NotificationRequest, PushType
from aioapns.common import NotificationResult
from aioapns.connection import (
    APNsBaseClientProtocol,
    APNsDevelopmentClientProtocol,
    APNsProductionClientProtocol,
    APNsTLSClientProtocol,
    AuthorizationHeaderProvider,
    JWTAuthorizationHeaderProvider,
)
from aioapns.exceptions import ConnectionClosed, MaxAttemptsExceeded
from aioapns.exceptions import ConnectionError as ApnsConnectionError
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
)
from h2.exceptions import FlowControlError, H2Error, NoAvailableStreamIDError, ProtocolError

from worker.foundation.logging_setup import log_context, redact_token
from worker.foundation.settings import ApnsSettings
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
# push (push-libraries.md §1 "Throughput").  1000 = the stream slots of one APNs connection.
MAX_IN_FLIGHT = 1000
# Added to the per-message timeout for the caller's overall wait on a batch.
BATCH_GRACE_SECONDS = 2.0
# Apple's error bodies are a few dozen bytes; never buffer more than this per stream.
_MAX_ERROR_BODY = 64 * 1024
# apns-id must be a UUID; other message ids are mapped to a stable one (same id -> same apns-id).
_APNS_ID_NAMESPACE = uuid.UUID("8f4d2a52-6c43-4c1e-9c5a-6f0e2b3c9d11")
_TOKEN_RE = re.compile(r"[0-9A-Za-z_-]+")

_TOKEN_INVALID_REASONS = frozenset({"Unregistered", "BadDeviceToken", "DeviceTokenNotForTopic"})
# Our credentials are wrong: nothing the message or the device can fix.
_CREDENTIAL_REASONS = APNS_CREDENTIAL_REASONS
_PUSH_TYPES = {PushKind.VOIP: PushType.VOIP, PushKind.ALERT: PushType.ALERT}


class _TrackedRequest(NotificationRequest):
    """A request that remembers whether APNs may have processed it."""

    __slots__ = ("at_most_once", "in_doubt")

    def __init__(self, *args: Any, at_most_once: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.at_most_once = at_most_once
        # Written to a connection and not known to be unprocessed: APNs may have delivered it.
        self.in_doubt = False


class _NotProcessed(ConnectionClosed):
    """The server said it did not process the request: safe to send again, even a ring.  A
    ConnectionClosed, so aioapns's pool resends it on another connection."""


class _AnswerLost(Exception):
    """An ``at_most_once`` request may have reached APNs, but its answer never will.  Not a
    ConnectionClosed, so the pool does not resend it."""


def _set_in_doubt(request: NotificationRequest, value: bool) -> None:
    if isinstance(request, _TrackedRequest):
        request.in_doubt = value


class _RobustProtocol(APNsTLSClientProtocol):
    """aioapns's connection protocol with its response handling replaced (see module docstring).

    Answers are matched by HTTP/2 stream id, not by the echoed ``apns-id`` header, and resolved
    when the stream ends, so bodies may arrive in any number of DATA frames (P3) and every
    per-stream entry is dropped exactly once (P2).  A future whose caller gave up is skipped (P1).
    """

    # Set per client by ApnsProvider._build_client (one subclass per client).
    shared_auth: ClassVar[AuthorizationHeaderProvider | None] = None

    def __init__(
        self,
        apns_topic: str,
        loop: asyncio.AbstractEventLoop | None = None,
        on_connection_lost: Callable[[APNsBaseClientProtocol], NoReturn] | None = None,
        auth_provider: AuthorizationHeaderProvider | None = None,
    ) -> None:
        super().__init__(apns_topic, loop, on_connection_lost, self.shared_auth or auth_provider)
        self._goaway = False
        # The GOAWAY's last stream id: streams above it were not processed (RFC 9113 §6.8).
        self._goaway_last_stream: int | None = None
        self._statuses: dict[int, str] = {}
        self._bodies: dict[int, bytearray] = {}

    @property
    def is_busy(self) -> bool:
        # P4: a connection that got GOAWAY must not be handed out again by the pool.
        return self._goaway or self.free_channels.is_busy

    async def send_notification(self, request: NotificationRequest) -> NotificationResult:
        """aioapns's request writing (connection.py), plus the record of whether APNs may have
        processed the request (``_TrackedRequest.in_doubt``)."""
        if self._goaway:
            raise ConnectionClosed("GOAWAY received")
        stream_id = await self.free_channels.acquire()
        try:
            self.conn.send_headers(stream_id=stream_id, headers=self._request_headers(request))
            body = json.dumps(request.message, ensure_ascii=False).encode()
            self.conn.send_data(stream_id=stream_id, data=body, end_stream=True)
        except (FlowControlError, NoAvailableStreamIDError):
            raise  # the pool handles these itself (nothing complete was written)
        except ProtocolError as exc:
            # P4: the h2 connection is already closed; ConnectionClosed makes the pool retry the
            # request on another connection.
            raise ConnectionClosed(str(exc)) from exc
        future: asyncio.Future[NotificationResult] = self.loop.create_future()
        self.requests[request.notification_id] = future
        self.request_streams[stream_id] = request.notification_id
        _set_in_doubt(request, True)
        self.flush()
        try:
            return await future
        except _NotProcessed:
            _set_in_doubt(request, False)
            raise  # the pool sends it again, on another connection
        except ConnectionClosed as exc:
            if isinstance(request, _TrackedRequest) and request.at_most_once:
                raise _AnswerLost(str(exc) or "connection closed") from exc
            raise  # at least once: the pool sends it again (stock aioapns behaviour)
        except asyncio.CancelledError:
            # The caller gave up (timeout).  Forget its future now, so a stream that is never
            # answered does not pin it until the connection closes; request_streams keeps the
            # stream so a late answer still frees its slot.
            if future.done():
                self.requests.pop(request.notification_id, None)
            raise

    def _request_headers(self, request: NotificationRequest) -> list[tuple[str, str]]:
        """The headers stock aioapns sends (APNsBaseClientProtocol.send_notification)."""
        headers = [
            (":method", "POST"),
            (":scheme", "https"),
            (":path", f"/3/device/{request.device_token}"),
            ("host", self.APNS_SERVER),
            ("apns-id", request.notification_id),
            ("apns-topic", request.apns_topic or self.apns_topic),
        ]
        if request.time_to_live is not None:
            headers.append(("apns-expiration", str(int(time.time()) + request.time_to_live)))
        if request.priority is not None:
            headers.append(("apns-priority", str(request.priority)))
        if request.collapse_key is not None:
            headers.append(("apns-collapse-id", request.collapse_key))
        if request.push_type is not None:
            headers.append(("apns-push-type", request.push_type.value))
        if self.auth_provider:
            headers.append(("authorization", self.auth_provider.get_header()))
        return headers

    # asyncio calls a protocol back in a copy of the context of whoever opened the connection:
    # the push of some event, whose event id and call cid would then be on every later line
    # about the connection (logged by aioapns or here), whichever event it serves by then.
    # The answers themselves reach each push's own task, which keeps its event's context.
    def data_received(self, data: bytes) -> None:
        with log_context(event_id=None, call_cid=None):
            self._receive(data)

    def _receive(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except ProtocolError as exc:
            # e.g. frames after a GOAWAY: h2 has closed the connection state.  Close quietly
            # instead of letting asyncio log "Fatal error on SSL protocol".
            logger.info("APNs connection protocol error, closing it: %s", exc)
            self.close()
            return
        for event in events:
            if isinstance(event, ResponseReceived):
                status = dict(event.headers).get(b":status", b"")
                self._statuses[event.stream_id] = (
                    status.decode() if isinstance(status, bytes) else str(status)
                )
            elif isinstance(event, DataReceived):
                # P5: hand the bytes back to the peer's send window.
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                if event.data:
                    body = self._bodies.setdefault(event.stream_id, bytearray())
                    if len(body) < _MAX_ERROR_BODY:
                        body.extend(event.data)
            elif isinstance(event, StreamEnded):
                self._finish(event.stream_id)
                self.free_channels.release()
            elif isinstance(event, StreamReset):
                # Not answered.  REFUSED_STREAM means "not processed" (RFC 9113 §8.7): safe to
                # resend.  Any other code: APNs may have processed it.
                code = event.error_code
                refused = code == ErrorCodes.REFUSED_STREAM
                error_class = _NotProcessed if refused else ConnectionClosed
                self._finish(event.stream_id, error_class(f"stream reset: {code}"))
                self.free_channels.release()
            elif isinstance(event, RemoteSettingsChanged):
                self.on_remote_settings_changed(event.changed_settings)  # type: ignore[arg-type]
            elif isinstance(event, ConnectionTerminated):
                self.on_connection_terminated(event)
        if self.transport is not None and not self.transport.is_closing():
            self.flush()

    def _finish(self, stream_id: int, error: Exception | None = None) -> None:
        status = self._statuses.pop(stream_id, "")
        body = bytes(self._bodies.pop(stream_id, b""))
        notification_id = self.request_streams.pop(stream_id, None)
        if notification_id is None:
            return
        future = self.requests.pop(notification_id, None)
        if future is None or future.done():
            return  # P1: the caller gave up; nobody wants this answer
        if error is not None:
            future.set_exception(error)
        elif status == "200":
            future.set_result(NotificationResult(notification_id, status))
        else:
            reason, timestamp = _parse_error_body(body)
            future.set_result(
                NotificationResult(notification_id, status, description=reason, timestamp=timestamp)
            )

    def on_connection_terminated(self, event: ConnectionTerminated) -> None:
        # Stock aioapns closes the connection at once: h2 cannot receive frames after a GOAWAY,
        # so the in-flight requests get ConnectionClosed.  Those above the GOAWAY's last stream
        # id were not processed and are resent; the others may have been, so only an
        # at-least-once push is resent (connection_lost, send_notification).
        self._goaway = True
        # A later GOAWAY must not raise the last stream id (RFC 9113 §6.8), but h2 sends one
        # of its own with a higher id when frames arrive after its GOAWAY: keep the lowest.
        last = event.last_stream_id
        if self._goaway_last_stream is not None and last is not None:
            last = min(last, self._goaway_last_stream)
        self._goaway_last_stream = last
        super().on_connection_terminated(event)

    def connection_lost(self, exc: Exception | None) -> None:
        with log_context(event_id=None, call_cid=None):  # not one event's: see data_received
            self._lose_connection(exc)

    def _lose_connection(self, exc: Exception | None) -> None:
        # P1: the stock handler calls set_exception() on every future and stops at the first
        # one that is already done (cancelled), leaving the rest unresolved.
        for notification_id, future in list(self.requests.items()):
            if future.done():
                del self.requests[notification_id]
        last = self._goaway_last_stream
        if last is not None:
            for stream_id, notification_id in list(self.request_streams.items()):
                unprocessed = self.requests.pop(notification_id, None) if stream_id > last else None
                if unprocessed is not None:
                    unprocessed.set_exception(_NotProcessed(f"above GOAWAY last stream {last}"))
        self._statuses.clear()
        self._bodies.clear()
        super().connection_lost(exc)


def _parse_error_body(body: bytes) -> tuple[str, int | None]:
    """``{"reason": ..., "timestamp": ...}``; tolerant of empty or non-JSON bodies."""
    if not body.strip():
        return "", None
    try:
        data = json.loads(body)
    except ValueError:
        return "", None
    if not isinstance(data, dict):
        return "", None
    reason = data.get("reason")
    timestamp = data.get("timestamp")
    return (
        reason if isinstance(reason, str) else "",
        timestamp if isinstance(timestamp, int) else None,
    )


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

    def connection_stats(self) -> list[dict[str, int]]:
        """Per open connection: entries in aioapns's per-request maps (for tests and health)."""
        if self._client is None or not self._loop_thread.started:
            return []
        return self._loop_thread.run(self._connection_stats(), timeout=5)

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
        # aioapns has no host/port arguments: they are class attributes of the protocol class
        # the pool instantiates (push-libraries.md §1 "pointing aioapns at a local server").
        base = (
            APNsDevelopmentClientProtocol if settings.use_sandbox else APNsProductionClientProtocol
        )
        attrs = {
            "APNS_SERVER": settings.host or base.APNS_SERVER,  # also the TLS SNI and :authority
            "APNS_PORT": settings.port or base.APNS_PORT,
            "shared_auth": self._new_auth_provider(),
        }
        client.pool.protocol_class = cast(
            type[APNsTLSClientProtocol], type("CallpushApnsProtocol", (_RobustProtocol,), attrs)
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
        request = _TrackedRequest(
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
            except _AnswerLost as exc:
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

    async def _connection_stats(self) -> list[dict[str, int]]:
        if self._client is None:
            return []
        stats = []
        for connection in self._client.pool.connections:
            stats.append(
                {
                    "requests": len(connection.requests),
                    "request_streams": len(connection.request_streams),
                    "request_statuses": len(connection.request_statuses),
                    "buffered_bodies": len(getattr(connection, "_bodies", {})),
                }
            )
        return stats

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

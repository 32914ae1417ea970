"""Repairs to aioapns 4.0's connection handling, kept apart from the APNs provider that uses them.

aioapns's response handling has five bugs (docs/push-libraries.md §1 "Pitfalls", P1-P4; P5
found while writing the provider).  :func:`install_repairs` makes a client's pool open
:class:`RobustProtocol` connections instead, which fix them:

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
every request whose connection closed; a :class:`TrackedRequest` with ``at_most_once`` (a ring)
that is in doubt is never resent, by the pool or by anyone: it raises :class:`AnswerLost`.

This module and worker/push/apns.py are the only ones that import aioapns.  Whatever here
reaches into aioapns's internals is pinned to aioapns 4.0 (docs/push-libraries.md §1).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar, NoReturn, cast

from aioapns import APNs, NotificationRequest
from aioapns.common import NotificationResult
from aioapns.connection import (
    APNsBaseClientProtocol,
    APNsTLSClientProtocol,
    AuthorizationHeaderProvider,
)
from aioapns.exceptions import ConnectionClosed
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
)
from h2.exceptions import FlowControlError, NoAvailableStreamIDError, ProtocolError

from worker.foundation.logging_setup import log_context

logger = logging.getLogger(__name__)

# Apple's error bodies are a few dozen bytes; never buffer more than this per stream.
_MAX_ERROR_BODY = 64 * 1024


def install_repairs(
    client: APNs,
    *,
    auth: AuthorizationHeaderProvider,
    host: str | None = None,
    port: int | None = None,
) -> None:
    """Make ``client``'s pool open :class:`RobustProtocol` connections, all signing with ``auth``,
    to ``host``:``port`` (default: the Apple server the client was built for).

    aioapns has no host/port arguments: they are class attributes of the protocol class the pool
    instantiates (docs/push-libraries.md §1 "Pointing aioapns at a local server"), so each
    client gets a subclass of its own and nothing global is patched."""
    stock = client.pool.protocol_class  # production or development, from use_sandbox
    attrs = {
        "APNS_SERVER": host or stock.APNS_SERVER,  # also the TLS SNI and :authority
        "APNS_PORT": port or stock.APNS_PORT,
        "shared_auth": auth,
    }
    client.pool.protocol_class = cast(
        type[APNsTLSClientProtocol], type("CallpushApnsProtocol", (RobustProtocol,), attrs)
    )


class TrackedRequest(NotificationRequest):
    """A request that remembers whether APNs may have processed it."""

    __slots__ = ("at_most_once", "in_doubt")

    def __init__(self, *args: Any, at_most_once: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.at_most_once = at_most_once
        # Written to a connection and not known to be unprocessed: APNs may have delivered it.
        self.in_doubt = False


class NotProcessed(ConnectionClosed):
    """The server said it did not process the request: safe to send again, even a ring.  A
    ConnectionClosed, so aioapns's pool resends it on another connection."""


class AnswerLost(Exception):
    """An ``at_most_once`` request may have reached APNs, but its answer never will.  Not a
    ConnectionClosed, so the pool does not resend it."""


def _set_in_doubt(request: NotificationRequest, value: bool) -> None:
    if isinstance(request, TrackedRequest):
        request.in_doubt = value


class RobustProtocol(APNsTLSClientProtocol):
    """aioapns's connection protocol with its response handling replaced (P1-P5 above).

    Answers are matched by HTTP/2 stream id, not by the echoed ``apns-id`` header, and resolved
    when the stream ends, so bodies may arrive in any number of DATA frames (P3) and every
    per-stream entry is dropped exactly once (P2).  A future whose caller gave up is skipped (P1).
    """

    # Set per client by install_repairs (one subclass per client).
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
        processed the request (``TrackedRequest.in_doubt``)."""
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
        except NotProcessed:
            _set_in_doubt(request, False)
            raise  # the pool sends it again, on another connection
        except ConnectionClosed as exc:
            if isinstance(request, TrackedRequest) and request.at_most_once:
                raise AnswerLost(str(exc) or "connection closed") from exc
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
                error_class = NotProcessed if refused else ConnectionClosed
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
                    unprocessed.set_exception(NotProcessed(f"above GOAWAY last stream {last}"))
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

"""A fake APNs provider API: HTTP/2 over TLS with ``h2`` and asyncio, in its own thread.

Started from shared/reference/fake_apns.py.  Behaviour is chosen from the device token's prefix:

  gone...      410 {"reason": "Unregistered", "timestamp": <ms>}
  bad...       400 BadDeviceToken
  notopic...   400 DeviceTokenNotForTopic
  throttle...  429 TooManyRequests
  fail5xx...   500 InternalServerError
  flaky5xx...  500 InternalServerError the first ``flaky_failures`` times (per token), then 200
  refuse...    RST_STREAM REFUSED_STREAM (not processed) the first ``flaky_failures`` times,
               then 200
  reset...     RST_STREAM INTERNAL_ERROR after reading the request (it may have been processed)
  drop...      closes the connection after reading the request, without answering
  big...       413 PayloadTooLarge (also any body over Apple's 4 KiB / 5 KiB for VoIP)
  slower...    200 after 3 * slow_delay seconds
  slow...      200 after slow_delay seconds
  silent...    never answers
  hold...      answers 200 when the test calls ``release()`` (deterministic late answers)
  anything else 200

Like Apple, it checks the ES256 provider token (403 MissingProviderToken / InvalidProviderToken,
ExpiredProviderToken when ``iat`` is over an hour old) and the apns-topic header (400 MissingTopic).
Options: ``goaway_after=N`` sends GOAWAY(NO_ERROR) after N requests on a connection;
``empty_data_on_200`` ends a 200 with an empty DATA frame (as Hypercorn does);
``split_error_body`` sends error bodies in two DATA frames.  Unlike the reference it respects
HTTP/2 flow control when sending: a client that never acknowledges received data stalls, as it
would against Apple.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import jwt
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import ProtocolError, StreamClosedError
from h2.settings import SettingCodes

HOLD = "hold"


class FakeApnsServer:
    """The server itself; lives in one event loop (see :func:`running_fake_apns`)."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        jwt_public_key: Any = None,
        *,
        max_concurrent_streams: int = 1000,
        slow_delay: float = 1.0,
        record: bool = True,
        goaway_after: int | None = None,
        empty_data_on_200: bool = False,
        split_error_body: bool = False,
        flaky_failures: int = 4,
    ) -> None:
        self.ssl_context = ssl_context
        self.jwt_public_key = jwt_public_key
        self.max_concurrent_streams = max_concurrent_streams
        self.slow_delay = slow_delay
        self.record = record
        self.goaway_after = goaway_after
        self.empty_data_on_200 = empty_data_on_200
        self.split_error_body = split_error_body
        self.flaky_failures = flaky_failures
        self.received: list[dict[str, Any]] = []
        self.hits: dict[str, int] = {}  # requests received per token
        self.count = 0
        self.connections = 0
        self.held: list[tuple[_Proto, int, str, str]] = []  # (proto, stream, apns-id, token)
        self._protocols: set[_Proto] = set()
        self._jwt_cache: dict[str, tuple[int, str, dict[str, Any]]] = {}
        self._server: asyncio.Server | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Proto(self), host, port, ssl=self.ssl_context
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for proto in list(self._protocols):
            if proto.transport is not None:
                proto.transport.close()
        if self._server is not None:
            await self._server.wait_closed()
        await asyncio.sleep(0.05)  # let the TLS transports finish closing

    def release(self, prefix: str = HOLD) -> int:
        """Answer 200 to every held request whose token starts with ``prefix``."""
        keep, released = [], 0
        for proto, stream_id, apns_id, token in self.held:
            if token.startswith(prefix):
                proto.respond(stream_id, apns_id, 200, None)
                released += 1
            else:
                keep.append((proto, stream_id, apns_id, token))
        self.held = keep
        return released

    def check_auth(self, authorization: str) -> tuple[int, str, dict[str, Any]]:
        """(status, reason, decoded JWT) for the authorization header; 200 = accepted."""
        cached = self._jwt_cache.get(authorization)
        if cached is None:
            cached = self._jwt_cache[authorization] = self._decode_jwt(authorization)
        status, _, decoded = cached
        if status == 200 and decoded and decoded["claims"]["iat"] < time.time() - 3600:
            return 403, "ExpiredProviderToken", {}
        return cached

    def _decode_jwt(self, authorization: str) -> tuple[int, str, dict[str, Any]]:
        if self.jwt_public_key is None:
            return 200, "", {}
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return 403, "MissingProviderToken", {}
        try:
            claims = jwt.decode(token, self.jwt_public_key, algorithms=["ES256"])
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            return 403, "InvalidProviderToken", {}
        if not isinstance(claims.get("iat"), int) or claims["iat"] < time.time() - 3600:
            return 403, "ExpiredProviderToken", {}
        return 200, "", {"header": header, "claims": claims}

    def decide(
        self, token: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str | None, float | str | None]:
        """(status, reason, delay): delay None = never answer, HOLD = until release(); status 0
        = no HTTP answer at all (reason: "drop", "refuse" or "reset")."""
        n = self.hits[token] = self.hits.get(token, 0) + 1
        if token.startswith("drop"):
            return 0, "drop", 0
        if token.startswith("reset"):
            return 0, "reset", 0
        if token.startswith("refuse") and n <= self.flaky_failures:
            return 0, "refuse", 0
        status, reason, _ = self.check_auth(headers.get("authorization", ""))
        if status != 200:
            return status, reason, 0
        if not headers.get("apns-topic"):
            return 400, "MissingTopic", 0
        limit = 5120 if headers.get("apns-push-type") == "voip" else 4096
        if token.startswith("big") or len(body) > limit:
            return 413, "PayloadTooLarge", 0
        for prefix, status, reason in (
            ("gone", 410, "Unregistered"),
            ("bad", 400, "BadDeviceToken"),
            ("notopic", 400, "DeviceTokenNotForTopic"),
            ("throttle", 429, "TooManyRequests"),
            ("fail5xx", 500, "InternalServerError"),
        ):
            if token.startswith(prefix):
                return status, reason, 0
        if token.startswith("flaky5xx") and n <= self.flaky_failures:
            return 500, "InternalServerError", 0
        if token.startswith("slower"):
            return 200, None, 3 * self.slow_delay
        if token.startswith("slow"):
            return 200, None, self.slow_delay
        if token.startswith("silent"):
            return 200, None, None
        if token.startswith(HOLD):
            return 200, None, HOLD
        return 200, None, 0


class _Proto(asyncio.Protocol):
    def __init__(self, server: FakeApnsServer) -> None:
        self.server = server
        self.conn = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        self.streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        self.transport: asyncio.Transport | None = None
        self.handled = 0
        self.goaway_sent = False
        self.number = 0
        # Outgoing DATA waiting for the client to open its receive window.
        self.pending: deque[tuple[int, bytes, bool]] = deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections += 1
        self.number = self.server.connections
        self.server._protocols.add(self)
        self.conn.initiate_connection()
        self.conn.update_settings(
            {SettingCodes.MAX_CONCURRENT_STREAMS: self.server.max_concurrent_streams}
        )
        transport.write(self.conn.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.server._protocols.discard(self)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except ProtocolError:
            self._flush()
            if self.transport is not None:
                self.transport.close()
            return
        for event in events:
            if isinstance(event, RequestReceived):
                self.streams[event.stream_id] = (dict(event.headers), bytearray())  # type: ignore[arg-type]
            elif isinstance(event, DataReceived):
                self.streams[event.stream_id][1].extend(event.data)
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, StreamEnded):
                if self.goaway_sent:
                    continue  # above last_stream_id: ignored, like a real server
                self._handle(event.stream_id)
                self.handled += 1
                goaway_after = self.server.goaway_after
                if goaway_after and self.handled >= goaway_after:
                    self.goaway_sent = True
                    self.conn.close_connection(last_stream_id=event.stream_id)
                    asyncio.get_running_loop().call_later(0.05, self._close)
            elif isinstance(event, StreamReset):
                self.streams.pop(event.stream_id, None)
            elif isinstance(event, WindowUpdated):
                self._drain()
            elif isinstance(event, ConnectionTerminated):
                self._close()
        self._flush()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _handle(self, stream_id: int) -> None:
        headers, body = self.streams.pop(stream_id)
        token = headers.get(":path", "").rsplit("/", 1)[-1]
        try:
            payload = json.loads(bytes(body) or b"{}")
        except ValueError:
            payload = None
        server = self.server
        status, reason, delay = server.decide(token, headers, bytes(body))
        if server.record:
            server.received.append(
                {
                    "token": token,
                    "headers": headers,
                    "payload": payload,
                    "t": time.monotonic(),
                    "connection": self.number,
                    "jwt": server.check_auth(headers.get("authorization", ""))[2],
                }
            )
        # Counted after it is recorded: a test thread that waits for the count then reads
        # ``received`` must find the request there.
        server.count += 1
        apns_id = headers.get("apns-id") or str(uuid.uuid4())
        if status == 0:
            self._no_answer(stream_id, reason)
            return
        if delay is None:
            return
        if delay == HOLD:
            server.held.append((self, stream_id, apns_id, token))
        elif delay:
            assert isinstance(delay, float | int)
            asyncio.get_running_loop().call_later(
                delay, self.respond, stream_id, apns_id, status, reason
            )
        else:
            self.respond(stream_id, apns_id, status, reason, flush=False)

    def _no_answer(self, stream_id: int, how: str | None) -> None:
        if how == "drop":
            # Read, perhaps processed, never answered: the TCP connection just closes.
            self._flush()
            if self.transport is not None:
                self.transport.abort()
            return
        code = ErrorCodes.REFUSED_STREAM if how == "refuse" else ErrorCodes.INTERNAL_ERROR
        with suppress(StreamClosedError, ProtocolError):
            self.conn.reset_stream(stream_id, error_code=code)

    def respond(
        self, stream_id: int, apns_id: str, status: int, reason: str | None, flush: bool = True
    ) -> None:
        if self.transport is None:
            return
        try:
            if status == 200:
                headers = [
                    (":status", "200"),
                    ("apns-id", apns_id),
                    ("apns-unique-id", str(uuid.uuid4())),
                ]
                if self.server.empty_data_on_200:
                    self.conn.send_headers(stream_id, headers)
                    self.pending.append((stream_id, b"", True))
                else:
                    self.conn.send_headers(stream_id, headers, end_stream=True)
            else:
                body: dict[str, Any] = {"reason": reason}
                if status == 410:
                    body["timestamp"] = int(time.time() * 1000)
                data = json.dumps(body).encode()
                self.conn.send_headers(
                    stream_id,
                    [
                        (":status", str(status)),
                        ("apns-id", apns_id),
                        ("content-type", "application/json"),
                        ("content-length", str(len(data))),
                    ],
                )
                if self.server.split_error_body:
                    half = len(data) // 2
                    self.pending.append((stream_id, data[:half], False))
                    self.pending.append((stream_id, data[half:], True))
                else:
                    self.pending.append((stream_id, data, True))
        except (StreamClosedError, ProtocolError):
            return
        self._drain()
        if flush:
            self._flush()

    def _drain(self) -> None:
        """Send queued DATA while the client's receive windows allow (HTTP/2 flow control)."""
        while self.pending:
            stream_id, data, end_stream = self.pending[0]
            try:
                if self.conn.local_flow_control_window(stream_id) < len(data):
                    return  # wait for a WINDOW_UPDATE
                self.conn.send_data(stream_id, data, end_stream=end_stream)
            except (StreamClosedError, ProtocolError):
                pass
            self.pending.popleft()

    def _flush(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.conn.data_to_send())


class FakeApns:
    """Handle used by tests: the server runs in its own thread and loop."""

    def __init__(self, server: FakeApnsServer, loop: asyncio.AbstractEventLoop, port: int):
        self.server = server
        self.loop = loop
        self.port = port

    @property
    def received(self) -> list[dict[str, Any]]:
        return self.server.received

    @property
    def count(self) -> int:
        return self.server.count

    @property
    def hits(self) -> dict[str, int]:
        """Requests received per device token."""
        return self.server.hits

    @property
    def connections(self) -> int:
        return self.server.connections

    def tokens(self) -> list[str]:
        return [r["token"] for r in list(self.server.received)]

    def wait_for(self, n: int, timeout: float = 10.0) -> bool:
        """Wait until the server has received ``n`` requests in total."""
        deadline = time.monotonic() + timeout
        while self.server.count < n:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def release(self, prefix: str = HOLD) -> int:
        """Answer the held requests whose token starts with ``prefix``; returns how many."""

        async def _release() -> int:
            return self.server.release(prefix)

        return asyncio.run_coroutine_threadsafe(_release(), self.loop).result(5)


@contextmanager
def running_fake_apns(
    ssl_context: ssl.SSLContext, jwt_public_key: Any = None, *, port: int = 0, **options: Any
) -> Iterator[FakeApns]:
    """Run a :class:`FakeApnsServer` on 127.0.0.1 in a daemon thread, on ``port`` (default: an
    ephemeral one; a fixed one lets a test start the server after the client first tried)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-apns", daemon=True)
    thread.start()
    server = FakeApnsServer(ssl_context, jwt_public_key, **options)
    try:
        port = asyncio.run_coroutine_threadsafe(server.start(port=port), loop).result(10)
        yield FakeApns(server, loop, port)
    finally:
        try:
            asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

"""A fake FCM HTTP v1 API and Google OAuth2 token endpoint (Flask, werkzeug, in a thread).

Started from shared/reference/fake_fcm.py.

  POST /token -> {"access_token": "fake-at-N", "expires_in": 3600}; the JWT-bearer assertion is
                 decoded and recorded in ``token_requests``.
  POST /v1/projects/<project>/messages:send -> by message.token prefix:
    unreg...      404 UNREGISTERED
    invalid...    400 INVALID_ARGUMENT "The registration token is not a valid FCM ..."
    badtoken...   400 INVALID_ARGUMENT with a BadRequest field violation on message.token
    badpayload... 400 INVALID_ARGUMENT about the message (message.android.ttl)
    mismatch...   403 SENDER_ID_MISMATCH
    quota...      429 QUOTA_EXCEEDED with Retry-After (``retry_after``), the first 2 times
    flaky...      503 UNAVAILABLE the first 3 times, then 200
    busy...       503 UNAVAILABLE with Retry-After (``retry_after``) the first ``busy_failures``
                  times, then 200
    drop...       closes the connection after reading the request, without answering
    internal...   500 INTERNAL
    slow...       200 after ``slow_delay`` seconds
    anything else 200 {"name": "projects/<p>/messages/<n>"}
Like FCM it answers 401 UNAUTHENTICATED to an unknown or revoked access token (``revoke()``,
``reject_auth``) and 400 INVALID_ARGUMENT when a data value is not a string.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import jwt
from flask import Flask, Response, jsonify, request
from werkzeug.serving import WSGIRequestHandler, make_server

FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


def fcm_error(http: int, status: str, code: str | None, message: str, field: str | None = None):
    details: list[dict[str, Any]] = []
    if code:
        details.append({"@type": FCM_ERROR, "errorCode": code})
    if field:
        details.append(
            {"@type": BAD_REQUEST, "fieldViolations": [{"field": field, "description": message}]}
        )
    return {"error": {"code": http, "message": message, "status": status, "details": details}}


class FakeFcm:
    """State and options of one fake; the Flask app reads them on every request."""

    def __init__(
        self,
        *,
        retry_after: str = "1",
        slow_delay: float = 3.0,
        reject_auth: bool = False,
        busy_failures: int = 2,
    ) -> None:
        self.retry_after = retry_after
        self.busy_failures = busy_failures
        self.slow_delay = slow_delay
        self.reject_auth = reject_auth
        self.received: list[dict[str, Any]] = []
        self.token_requests: list[dict[str, Any]] = []
        self.hits: dict[str, int] = {}
        self.revoked: set[str] = set()
        self.port = 0
        self._access_tokens = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._lock = threading.Lock()
        self.app = self._create_app()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    @property
    def endpoint(self) -> str:
        """The value for FcmSettings.endpoint."""
        return f"{self.url}/v1/projects"

    def revoke(self, access_token: str) -> None:
        self.revoked.add(access_token)

    def wait_for(self, n: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.received) < n:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def _next(self, counter: itertools.count[int]) -> int:
        with self._lock:
            return next(counter)

    def _create_app(self) -> Flask:
        app = Flask("fake_fcm")

        @app.post("/token")
        def token() -> Response:
            form = dict(request.form)
            claims = {}
            if "assertion" in form:
                claims = jwt.decode(form["assertion"], options={"verify_signature": False})
            self.token_requests.append({"form": form, "claims": claims})
            return jsonify(
                access_token=f"fake-at-{self._next(self._access_tokens)}",
                expires_in=3600,
                token_type="Bearer",
            )

        @app.post("/v1/projects/<project>/messages:send")
        def send(project: str) -> Any:
            return self._send(project)

        return app

    def _send(self, project: str) -> Any:
        auth = request.headers.get("Authorization", "")
        access_token = auth.removeprefix("Bearer ")
        if (
            self.reject_auth
            or not access_token.startswith("fake-at")
            or access_token in self.revoked
        ):
            body = fcm_error(401, "UNAUTHENTICATED", None, "Request had invalid credentials.")
            return jsonify(body), 401
        body = request.get_json(force=True)
        message = body.get("message", {})
        token = message.get("token", "")
        self.received.append(
            {
                "project": project,
                "token": token,
                "message": message,
                "body": body,
                "authorization": auth,
                "t": time.monotonic(),
            }
        )
        with self._lock:
            n = self.hits[token] = self.hits.get(token, 0) + 1
        for i, value in enumerate((message.get("data") or {}).values()):
            if not isinstance(value, str):
                field = f"message.data[{i}].value"
                error = fcm_error(
                    400,
                    "INVALID_ARGUMENT",
                    "INVALID_ARGUMENT",
                    f"Invalid value at '{field}'",
                    field,
                )
                return jsonify(error), 400
        return self._by_prefix(project, token, n)

    def _by_prefix(self, project: str, token: str, n: int) -> Any:
        if token.startswith("unreg"):
            return jsonify(
                fcm_error(404, "NOT_FOUND", "UNREGISTERED", "Requested entity was not found.")
            ), 404
        if token.startswith("invalid"):
            text = "The registration token is not a valid FCM registration token"
            return jsonify(fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", text)), 400
        if token.startswith("badtoken"):
            text = "Request contains an invalid argument."
            error = fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", text, "message.token")
            return jsonify(error), 400
        if token.startswith("badpayload"):
            text = "Invalid value at 'message.android.ttl'"
            error = fcm_error(
                400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", text, "message.android.ttl"
            )
            return jsonify(error), 400
        if token.startswith("mismatch"):
            return jsonify(
                fcm_error(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH", "SenderId mismatch")
            ), 403
        if token.startswith("quota") and n <= 2:
            error = fcm_error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "Quota exceeded.")
            return jsonify(error), 429, {"Retry-After": self.retry_after}
        if token.startswith("flaky") and n <= 3:
            return jsonify(
                fcm_error(503, "UNAVAILABLE", "UNAVAILABLE", "The service is unavailable.")
            ), 503
        if token.startswith("busy") and n <= self.busy_failures:
            error = fcm_error(503, "UNAVAILABLE", "UNAVAILABLE", "The service is unavailable.")
            return jsonify(error), 503, {"Retry-After": self.retry_after}
        if token.startswith("drop"):
            # Read, perhaps processed, never answered: the TCP connection just closes (werkzeug's
            # dev server hands the socket to the app as environ["werkzeug.socket"]).
            connection = request.environ["werkzeug.socket"]
            connection.shutdown(socket.SHUT_RDWR)
            connection.close()
            return "", 200  # never reaches the client
        if token.startswith("internal"):
            return jsonify(fcm_error(500, "INTERNAL", "INTERNAL", "Internal error.")), 500
        if token.startswith("slow"):
            time.sleep(self.slow_delay)
        return jsonify(name=f"projects/{project}/messages/{self._next(self._message_ids)}")


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@contextmanager
def running_fake_fcm(*, port: int = 0, **options: Any) -> Iterator[FakeFcm]:
    """Serve a :class:`FakeFcm` on 127.0.0.1 from a daemon thread, on ``port`` (default: an
    ephemeral one; a fixed one lets a test start the server after the client first tried)."""
    fake = FakeFcm(**options)
    server = make_server("127.0.0.1", port, fake.app, threaded=True, request_handler=_QuietHandler)
    fake.port = server.server_port
    # A short poll interval: shutdown() waits up to one interval (default 0.5 s per test).
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-fcm", daemon=True
    )
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)

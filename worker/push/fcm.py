"""FCM HTTP v1 via pyfcm 2.1.1: the only module importing pyfcm, google-auth or requests for FCM.

pyfcm is used for what it does well: service-account auth, a per-thread ``requests`` session with
the bearer header, the endpoint and ``parse_payload``.  Its sending path is not used
(push-libraries.md §2 "Retry behaviour"): ``send_request`` ``time.sleep``s on ``Retry-After`` and
recurses without bound, its default adapter retries 502/503 inside urllib3 for up to 486 s, and
``notify`` defaults to a 120 s timeout.  We post the parsed payload ourselves through an adapter
with ``max_retries=0`` and map the raw response to the closed :class:`PushResult` vocabulary.

A request that failed without an answer is told apart by when it failed: while connecting
(refused, DNS, connect timeout) nothing was sent and it is ``RETRY``; after that (read timeout,
connection closed while waiting for the answer) FCM may have taken it, so an ``at_most_once``
message (a ring) is ``UNCONFIRMED`` and never sent again.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import google.auth.exceptions
import google.auth.transport.requests
import requests
from pyfcm import FCMNotification
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError

from worker.foundation.http_retry import parse_retry_after
from worker.foundation.logging_setup import redact_token
from worker.foundation.settings import FcmSettings
from worker.push.base import (
    AnswerCallback,
    Platform,
    PushKind,
    PushMessage,
    PushOutcome,
    PushResult,
)

logger = logging.getLogger(__name__)

# pyfcm renews a thread's session header every 1800 s (baseapi.requests_session); a token handed
# to a session must outlive that, plus a margin.
_SESSION_HEADER_SECONDS = 1800
_TOKEN_MARGIN_SECONDS = 120
# Added to the computed bound of a batch before the caller stops waiting.
BATCH_GRACE_SECONDS = 10.0
# FCM rejects these data keys (FCM HTTP v1 reference, Message.data).
_RESERVED_KEYS = frozenset({"from", "notification", "message_type"})
_RESERVED_PREFIXES = ("google.", "gcm.")
_RETRY_CODES = frozenset({"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL"})
_FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"


class _TimeoutRequest(google.auth.transport.requests.Request):
    """google-auth's transport with our timeout instead of its 120 s default."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Any = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        return super().__call__(
            url,
            method=method,
            body=body,
            headers=headers,
            timeout=timeout or self._timeout,
            **kwargs,
        )


class _SharedTokenFCM(FCMNotification):
    """FCMNotification whose threads share one access token.

    Stock pyfcm calls ``credentials.refresh()`` whenever any thread builds or renews its session
    (push-libraries.md §2 "Access token"): one token request per thread per 30 min.  Here the
    token is refreshed only when missing, marked stale by a 401, or too close to expiry to last a
    session's 1800 s header lifetime.
    """

    def __init__(self, *args: Any, token_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._token_lock = threading.Lock()
        self._stale_token: str | None = None
        self._token_request = _TimeoutRequest(token_timeout)

    def _get_access_token(self) -> str:
        # google-auth errors propagate unwrapped (pyfcm would wrap them in InvalidDataError).
        with self._token_lock:
            if self.credentials is None:
                self._initialize_credentials()
            credentials = self.credentials
            if not self._token_usable(credentials):
                credentials.refresh(self._token_request)
                self._stale_token = None
            return str(credentials.token)

    def _token_usable(self, credentials: Any) -> bool:
        token = credentials.token
        if not token or token == self._stale_token:
            return False
        expiry = credentials.expiry  # naive UTC, or None for tokens that do not expire
        if expiry is None:
            return True
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        left = (expiry - now).total_seconds()
        return bool(left > _SESSION_HEADER_SECONDS + _TOKEN_MARGIN_SECONDS)

    def invalidate_token(self, token: str) -> None:
        """A request with ``token`` got 401: the next session renewal must fetch a new one."""
        with self._token_lock:
            if self.credentials is not None and self.credentials.token == token:
                self._stale_token = token
        # pyfcm caches the header per thread until token_expiry: make this thread renew it.
        self.thread_local.token_expiry = 0


def string_data(payload: dict[str, Any]) -> dict[str, str]:
    """FCM ``data`` values must be strings (pyfcm does not check): coerce scalars, JSON-encode
    lists and objects, drop ``None``; raise ValueError for what FCM would reject."""
    data: dict[str, str] = {}
    for key, value in payload.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"data key {key!r} is not a non-empty string")
        if key in _RESERVED_KEYS or key.startswith(_RESERVED_PREFIXES):
            raise ValueError(f"data key {key!r} is reserved by FCM")
        if value is None:
            continue
        if isinstance(value, str):
            data[key] = value
        elif isinstance(value, bool):
            data[key] = "true" if value else "false"
        elif isinstance(value, int | float):
            data[key] = str(value)
        elif isinstance(value, dict | list):
            data[key] = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        else:
            raise ValueError(f"data value for {key!r} has unsupported type {type(value).__name__}")
    return data


def android_config(message: PushMessage) -> dict[str, str]:
    config = {"priority": "high" if message.priority >= 10 else "normal"}
    if message.time_to_live is not None:
        config["ttl"] = f"{message.time_to_live}s"
    if message.collapse_id:
        config["collapse_key"] = message.collapse_id
    return config


def _error_details(response: requests.Response) -> tuple[str, str, str, bool]:
    """(status, errorCode, message, token_field_violation) from a Google API error body."""
    try:
        error = response.json().get("error", {})
    except (ValueError, AttributeError):
        return "", "", "", False
    if not isinstance(error, dict):
        return "", "", "", False
    error_code = ""
    token_violation = False
    for detail in error.get("details") or []:
        if not isinstance(detail, dict):
            continue
        if detail.get("@type") == _FCM_ERROR_TYPE:
            error_code = str(detail.get("errorCode") or "")
        elif detail.get("@type") == _BAD_REQUEST_TYPE:
            for violation in detail.get("fieldViolations") or []:
                if isinstance(violation, dict) and violation.get("field") == "message.token":
                    token_violation = True
    return (
        str(error.get("status") or ""),
        error_code,
        str(error.get("message") or ""),
        token_violation,
    )


# Raised while preparing a request, before anything is sent.
_NOT_SENT_ERRORS = (
    requests.ConnectTimeout,
    requests.exceptions.InvalidURL,
    requests.exceptions.InvalidSchema,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidHeader,
)


def request_not_sent(error: requests.RequestException) -> bool:
    """Whether a failed POST certainly never reached FCM: the connection was never made (refused,
    DNS, connect timeout; urllib3 raises these from ``_new_conn``), or the request could not be
    built.  Anything later (read timeout, connection closed while waiting for the answer) may
    have been received."""
    if isinstance(error, _NOT_SENT_ERRORS):
        return True
    if isinstance(error, requests.ConnectionError) and error.args:
        cause = error.args[0]
        if isinstance(cause, MaxRetryError):
            cause = cause.reason
        # NewConnectionError (refused; NameResolutionError is one) is a ConnectTimeoutError.
        return isinstance(cause, NewConnectionError | ConnectTimeoutError)
    return False


def _unanswered(message: PushMessage, reason: str, **extra: Any) -> PushOutcome:
    """The outcome of a request FCM may have received but did not answer."""
    result = PushResult.UNCONFIRMED if message.at_most_once else PushResult.RETRY
    return PushOutcome(result, reason=reason, extra=extra)


def classify_response(response: requests.Response) -> PushOutcome:
    """Map an FCM HTTP v1 answer to the closed vocabulary (FCM ErrorCode reference)."""
    code = response.status_code
    if code == 200:
        try:
            name = response.json().get("name")
        except (ValueError, AttributeError):
            name = None
        return PushOutcome(PushResult.SENT, status_code=code, provider_message_id=name)
    status, error_code, text, token_violation = _error_details(response)
    reason = error_code or status or f"HTTP{code}"
    if code == 404 or error_code in ("UNREGISTERED", "SENDER_ID_MISMATCH"):
        return PushOutcome(
            PushResult.TOKEN_INVALID, reason=error_code or "UNREGISTERED", status_code=code
        )
    if code == 400 and (token_violation or "registration token" in text.lower()):
        return PushOutcome(PushResult.TOKEN_INVALID, reason=reason, status_code=code)
    if code == 429 or code >= 500 or error_code in _RETRY_CODES:
        return PushOutcome(
            PushResult.RETRY,
            reason=reason,
            status_code=code,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    return PushOutcome(PushResult.FAILED, reason=reason, status_code=code, extra={"message": text})


class FcmProvider:
    """Sends data-only messages concurrently on a thread pool owned by the provider."""

    name = "fcm"

    def __init__(self, settings: FcmSettings, credentials: Any = None) -> None:
        """``credentials``: an optional google-auth credentials object used instead of
        ``settings.service_account_file`` (tests, workload identity)."""
        if settings.service_account_file is None and credentials is None:
            raise ValueError("FCM is not configured: fcm.service_account_file is not set")
        self._settings = settings
        self._credentials = credentials
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False
        self._fcm, self._adapter, self._executor = self._build()
        # Loads the service account and resolves the project now: fail at start-up.
        self._endpoint: str = self._fcm.fcm_end_point

    def _build(self) -> tuple[_SharedTokenFCM, HTTPAdapter, ThreadPoolExecutor]:
        settings = self._settings
        # max_retries=0: no retries hidden inside urllib3 (push-libraries.md §2).  One adapter is
        # shared by every thread's session, so its pool must hold a connection per worker.
        adapter = HTTPAdapter(
            max_retries=0, pool_connections=1, pool_maxsize=max(settings.max_workers, 1)
        )
        fcm = _SharedTokenFCM(
            service_account_file=(
                str(settings.service_account_file) if self._credentials is None else None
            ),
            project_id=settings.project_id,
            credentials=self._credentials,
            adapter=adapter,
            token_timeout=settings.timeout_seconds,
        )
        # Read once by the fcm_end_point property; the instance attribute wins over the class's.
        fcm.FCM_END_POINT_BASE = settings.endpoint.rstrip("/")
        executor = ThreadPoolExecutor(
            max_workers=max(settings.max_workers, 1), thread_name_prefix="callpush-fcm"
        )
        return fcm, adapter, executor

    def _ensure_open(self) -> None:
        if self._pid != os.getpid():
            # After fork the pool's threads are gone and the adapter's sockets are the parent's:
            # never touch them, build new ones.
            self._lock = threading.Lock()
            self._pid = os.getpid()
            self._closed = True
        with self._lock:
            if self._closed:  # after close() (or fork): reopen lazily, like ApnsProvider
                self._fcm, self._adapter, self._executor = self._build()
                self._endpoint = self._fcm.fcm_end_point
                self._closed = False

    def send_batch(
        self, messages: Sequence[PushMessage], on_answer: AnswerCallback | None = None
    ) -> list[PushOutcome]:
        if not messages:
            return []
        self._ensure_open()
        # Each in a copy of the caller's context, so its log lines carry the event id and call
        # cid (worker/foundation/logging_setup.py); one copy per task: a context runs in one thread
        # at once.
        futures = [
            self._executor.submit(
                contextvars.copy_context().run, self._send_one, message, index, on_answer
            )
            for index, message in enumerate(messages)
        ]
        # Each message: at most two posts (401 -> refresh -> retry), each bounded by a connect
        # and a read timeout, plus a token refresh (google-auth retries it up to 3 times).
        timeout = self._settings.timeout_seconds
        rounds = math.ceil(len(messages) / max(self._settings.max_workers, 1))
        bound = rounds * 8 * timeout + BATCH_GRACE_SECONDS
        return self._collect(futures, messages, bound)

    def _collect(
        self, futures: list[Future[PushOutcome]], messages: Sequence[PushMessage], bound: float
    ) -> list[PushOutcome]:
        deadline = time.monotonic() + bound
        outcomes = []
        for future, message in zip(futures, messages, strict=True):
            try:
                outcomes.append(future.result(max(0.0, deadline - time.monotonic())))
            except TimeoutError:
                logger.error("FCM push to %s: batch bound exceeded", redact_token(message.token))
                if future.cancel():  # never started: nothing was sent
                    outcomes.append(PushOutcome(PushResult.RETRY, reason="timeout"))
                else:
                    outcomes.append(_unanswered(message, "timeout"))
            except Exception:  # _send_one does not raise; a bug must not lose the batch
                logger.exception("FCM push to %s failed", redact_token(message.token))
                outcomes.append(_unanswered(message, "error"))
        return outcomes

    def close(self) -> None:
        if self._pid != os.getpid():
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._adapter.close()

    # -- on a pool thread ------------------------------------------------------------------------

    def _send_one(
        self, message: PushMessage, index: int, on_answer: AnswerCallback | None
    ) -> PushOutcome:
        token = redact_token(message.token)
        try:
            outcome = self._deliver(message)
        except Exception:
            logger.exception("FCM push to %s failed unexpectedly", token)
            outcome = _unanswered(message, "error")
        else:
            self._log_outcome(token, outcome)
        if on_answer is not None:
            on_answer(index, outcome)  # before the future completes: all reported on return
        return outcome

    def _deliver(self, message: PushMessage) -> PushOutcome:
        if message.platform != Platform.FCM or message.kind != PushKind.DATA:
            return PushOutcome(PushResult.FAILED, reason=f"UnsupportedKind:{message.kind}")
        if not message.token:
            return PushOutcome(PushResult.TOKEN_INVALID, reason="EmptyToken", extra={"local": True})
        try:
            data = string_data(message.payload)
        except ValueError as exc:
            return PushOutcome(
                PushResult.FAILED, reason="InvalidDataPayload", extra={"error": str(exc)}
            )
        if not data:
            # parse_payload would then send an empty "notification" instead of a data message.
            return PushOutcome(PushResult.FAILED, reason="EmptyDataPayload")
        body = self._fcm.parse_payload(
            fcm_token=message.token, data_payload=data, android_config=android_config(message)
        )
        outcome = self._post(message, body)
        if outcome is None:  # 401: our access token was refused; refresh once, try once more
            outcome = self._post(message, body)
        if outcome is None:
            return PushOutcome(PushResult.FAILED, reason="UNAUTHENTICATED", status_code=401)
        return outcome

    def _post(self, message: PushMessage, body: bytes) -> PushOutcome | None:
        """One POST; ``None`` means 401 (the token used has been invalidated)."""
        fcm = self._fcm
        try:
            session = fcm.requests_session  # refreshes the access token when due
            response = session.post(
                self._endpoint, data=body, timeout=self._settings.timeout_seconds
            )
        except requests.RequestException as exc:
            error = type(exc).__name__
            if request_not_sent(exc):
                return PushOutcome(PushResult.RETRY, reason="connection", extra={"error": error})
            if isinstance(exc, requests.Timeout):  # sent; the answer did not come in time
                return _unanswered(message, "timeout", error=error)
            return _unanswered(message, "connection-lost", error=error)
        except google.auth.exceptions.TransportError as exc:
            logger.error("FCM access token: token endpoint unreachable (%s)", type(exc).__name__)
            return PushOutcome(PushResult.RETRY, reason="auth-unavailable")
        except google.auth.exceptions.RefreshError as exc:
            logger.error("FCM access token refresh failed: %s", exc)
            if exc.retryable:
                return PushOutcome(PushResult.RETRY, reason="auth-unavailable")
            return PushOutcome(PushResult.FAILED, reason="auth")
        if response.status_code == 401:
            used = str(session.headers.get("Authorization", "")).removeprefix("Bearer ")
            fcm.invalidate_token(used)
            return None
        return classify_response(response)

    def _log_outcome(self, token: str, outcome: PushOutcome) -> None:
        if outcome.result is PushResult.SENT:
            return
        if outcome.status_code in (401, 403) and outcome.result is PushResult.FAILED:
            logger.error(
                "FCM rejected our credentials (%s %s): check fcm.service_account_file",
                outcome.status_code,
                outcome.reason,
            )
        elif outcome.result is PushResult.TOKEN_INVALID:
            logger.info("FCM token %s is invalid: %s", token, outcome.reason)
        else:
            logger.warning(
                "FCM push to %s: %s %s (%s)",
                token,
                outcome.result.value,
                outcome.status_code,
                outcome.reason,
            )

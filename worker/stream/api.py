"""Stream's server-side REST API: the only module that talks to it (stream-protocol.md §4).

Three reads are needed: the members of a call (QueryCallMembers, §4.4), for events whose webhook
carries no or a possibly truncated ``members`` list (§2.4), a user's devices (§4.3), for apps
whose SDKs register push tokens with Stream instead of with callpush, and the call types'
``notification_settings``, for apps that follow Stream's push settings
(worker/delivery/call_type_settings.py).

Nothing is retried here, with one exception: a 401 while the app has several secrets (a rotation
under way) is retried once with each other secret, and the one Stream accepts is kept.  Every
other failure is a :class:`StreamApiError` saying whether a retry can help, and the caller, which
knows its deadline, decides.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from typing import Any
from urllib.parse import quote

import jwt
import requests
from requests.adapters import HTTPAdapter

from worker.foundation.http_retry import parse_retry_after
from worker.foundation.settings import StreamAppSettings
from worker.stream.events import (
    LIVE_STARTED,
    MISSED,
    NOTIFICATION,
    RING,
    SESSION_STARTED,
    user_display_name,
)

log = logging.getLogger("callpush.stream_api")

MEMBERS_PATH = "/api/v2/video/call/members"
DEVICES_PATH = "/api/v2/devices"
# ListCallTypes / GetCallType (GetStream/stream-py getstream/video/rest_client.py).
CALL_TYPES_PATH = "/api/v2/video/calltypes"
# NotificationSettings' per-event entries and the events they are for
# (https://getstream.io/video/docs/ios/call_types/settings).
NOTIFICATION_SETTINGS_EVENTS = {
    "call_ring": RING,
    "call_notification": NOTIFICATION,
    "call_missed": MISSED,
    "call_live_started": LIVE_STARTED,
    "session_started": SESSION_STARTED,
}
# QueryCallMembersRequest.limit is 0..100 ([OAS], stream-protocol.md §4.4).
MAX_PAGE_SIZE = 100
# Connections kept per host: enough for the device fan-out's thread pool (device_sources.py).
POOL_SIZE = 16
_MAX_ERROR_TEXT = 200


@dataclass(frozen=True, slots=True)
class CallMember:
    user_id: str
    display_name: str  # the user's name, else the id (Stream's "always populated" display name)
    role: str


@dataclass(frozen=True, slots=True)
class StreamDevice:
    """One entry of ``GET /api/v2/devices`` (``DeviceResponse``, stream-protocol.md §4.3)."""

    token: str  # DeviceResponse.id is the push token itself
    push_provider: str  # "apn" | "firebase" | "huawei" | "xiaomi"
    voip: bool  # an Apple PushKit (VoIP) token
    disabled: bool
    # "Stable physical device identifier used to deduplicate pushes across push providers".
    hardware_id: str | None
    push_provider_name: str | None = None


@dataclass(frozen=True, slots=True)
class EventPushSettings:
    """One ``EventNotificationSettings``: whether the event notifies, and its APNs wording."""

    enabled: bool
    title: str  # apns.title, a Handlebars template ("" when Stream has none)
    body: str  # apns.body


@dataclass(frozen=True, slots=True)
class CallTypePushSettings:
    """A call type's ``notification_settings`` (``CallTypeResponse``), keyed by event type."""

    name: str
    enabled: bool  # the call type's master switch
    events: Mapping[str, EventPushSettings]  # "call.ring", "call.missed", ...


class StreamApiError(Exception):
    """A failed Stream request.  ``status`` is None when no HTTP answer came (timeout, refused)."""

    def __init__(
        self,
        status: int | None,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status or 'no response'}: {message}")
        self.status = status
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments: the default pickling (Celery ships exceptions) would fail.
        return (_rebuild_error, (self.status, self.message, self.retryable, self.retry_after))


def _rebuild_error(
    status: int | None, message: str, retryable: bool, retry_after: float | None
) -> StreamApiError:
    return StreamApiError(status, message, retryable=retryable, retry_after=retry_after)


def _is_retryable(status: int) -> bool:
    # The codes Stream itself retries webhooks on (stream-protocol.md §1.4): 408, 429 and 5xx.
    return status in (408, 429) or status >= 500


class StreamApi:
    """A client for one Stream app.  Thread-safe: the device fan-out calls it from a pool."""

    def __init__(self, app: StreamAppSettings, timeout: float) -> None:
        self._app = app
        self._base_url = app.base_url.rstrip("/")
        self._timeout = timeout
        # Every secret the app may hold at Stream (README: rotating the API secret): the current
        # one first.  On a 401 the others are tried, and the one Stream accepts is kept.
        self._secrets = [secret.get_secret_value() for secret in app.api_secrets]
        self._secret_in_use = 0
        self._tokens: dict[int, str] = {}
        self._token_lock = threading.Lock()
        self._session = requests.Session()
        # Requests are authenticated by the JWT alone; refusing cookies keeps the shared session
        # free of state that threads would write concurrently.
        self._session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        # max_retries=0: no hidden retries inside urllib3, the caller owns the retry budget.
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=POOL_SIZE, max_retries=0)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self._session.headers.update(
            {"stream-auth-type": "jwt", "X-Stream-Client": "callpush", "Accept": "application/json"}
        )

    @property
    def api_key(self) -> str:
        return self._app.api_key

    def server_token(self, secret_index: int | None = None) -> str:
        """HS256 over ``{"server": true}`` with the secret in use (the current one until Stream
        refused it; §4.5; push-libraries.md §4).  Stream's server tokens carry no iat/exp, so
        one token per secret serves the whole process."""
        index = self._secret_in_use if secret_index is None else secret_index
        token = self._tokens.get(index)
        if token is None:
            with self._token_lock:
                token = self._tokens.get(index)
                if token is None:
                    token = jwt.encode({"server": True}, self._secrets[index], algorithm="HS256")
                    self._tokens[index] = token
        return token

    def iter_call_member_pages(
        self, call_type: str, call_id: str, page_size: int = MAX_PAGE_SIZE
    ) -> Iterator[list[CallMember]]:
        """The call's members, one page per request, following ``next`` until it is absent
        (§4.4).  A generator: nothing is requested before the first page is taken, and a large
        call is never held in memory at once."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}, not {page_size}")
        cursor: str | None = None
        seen_cursors: set[str] = set()
        while True:
            body: dict[str, Any] = {"type": call_type, "id": call_id, "limit": page_size}
            if cursor is not None:
                body["next"] = cursor
            data = self._request("POST", MEMBERS_PATH, json_body=body)
            page = [m for m in map(_call_member, _list(data.get("members"))) if m is not None]
            if page:
                yield page
            next_cursor = data.get("next")
            if not isinstance(next_cursor, str) or not next_cursor:
                return
            # A cursor that comes back again would page forever (and push forever).
            if next_cursor in seen_cursors:
                raise StreamApiError(
                    None, f"{MEMBERS_PATH} repeated a next cursor", retryable=False
                )
            seen_cursors.add(next_cursor)
            cursor = next_cursor

    def list_devices(self, user_id: str) -> list[StreamDevice]:
        """Every device Stream holds for the user, enabled or not (§4.3)."""
        data = self._request("GET", DEVICES_PATH, params={"user_id": user_id})
        return [d for d in map(_stream_device, _list(data.get("devices"))) if d is not None]

    def list_call_type_push_settings(self) -> dict[str, CallTypePushSettings]:
        """Every call type of the app with its push settings (``GET /api/v2/video/calltypes``,
        ``ListCallTypeResponse{call_types: {name: CallTypeResponse}}``)."""
        data = self._request("GET", CALL_TYPES_PATH)
        call_types = data.get("call_types")
        if not isinstance(call_types, Mapping):
            raise StreamApiError(
                200, f"GET {CALL_TYPES_PATH}: the answer has no call_types object", retryable=False
            )
        return {
            name: _call_type_push_settings(name, item)
            for name, item in call_types.items()
            if isinstance(name, str) and name
        }

    def call_type_push_settings(self, name: str) -> CallTypePushSettings:
        """One call type's push settings (``GET /api/v2/video/calltypes/{name}``); a call type
        Stream does not have is a :class:`StreamApiError` with status 404."""
        data = self._request("GET", f"{CALL_TYPES_PATH}/{quote(name, safe='')}")
        return _call_type_push_settings(name, data)

    def close(self) -> None:
        self._session.close()

    def _send(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        json_body: Mapping[str, Any] | None,
        secret_index: int,
    ) -> requests.Response:
        what = f"{method} {path}"
        try:
            return self._session.request(
                method,
                self._base_url + path,
                params=query,
                json=json_body,
                headers={"Authorization": self.server_token(secret_index)},
                timeout=self._timeout,
            )
        except requests.Timeout:
            raise StreamApiError(
                None, f"{what} timed out after {self._timeout:g} s", retryable=True
            ) from None
        except requests.ConnectionError as error:
            raise StreamApiError(
                None, f"{what} failed: {error.__class__.__name__}", retryable=True
            ) from None
        except requests.RequestException as error:
            raise StreamApiError(
                None, f"{what} failed: {error.__class__.__name__}", retryable=False
            ) from None

    def _retry_with_other_secrets(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        json_body: Mapping[str, Any] | None,
        refused: int,
        response: requests.Response,
    ) -> requests.Response:
        """Stream refused the token: mid-rotation it may still hold another of the app's
        secrets (the old one before the dashboard rotation, the new one after).  Each other
        secret is tried once; the first Stream accepts is used from then on."""
        for index in range(len(self._secrets)):
            if index == refused:
                continue
            retried = self._send(method, path, query, json_body, index)
            if retried.status_code == 401:
                continue
            with self._token_lock:
                changed = self._secret_in_use != index
                self._secret_in_use = index
            if changed:
                # Never the secret itself: its position in the configuration only.
                log.warning(
                    "Stream app %s refused the token of secret #%d and accepted secret #%d "
                    "(0 = api_secret, then previous_api_secrets in order); callpush signs its "
                    "calls with it from now on",
                    self._app.api_key,
                    refused,
                    index,
                )
            return retried
        return response

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Mapping[str, Any] | None = None,
    ) -> Mapping[str, Any]:
        # §4.5: the raw JWT, no "Bearer " prefix, plus stream-auth-type and the api_key param.
        # Neither the token nor the secret may reach a log line or an error message.
        query = {"api_key": self._app.api_key, **(params or {})}
        what = f"{method} {path}"
        in_use = self._secret_in_use
        response = self._send(method, path, query, json_body, in_use)
        if response.status_code == 401 and len(self._secrets) > 1:
            response = self._retry_with_other_secrets(
                method, path, query, json_body, in_use, response
            )
        log.debug("%s -> %s in %.0f ms", what, response.status_code, _elapsed_ms(response))
        if response.status_code >= 400:
            raise StreamApiError(
                response.status_code,
                f"{what}: {_error_text(response)}",
                retryable=_is_retryable(response.status_code),
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, Mapping):
            raise StreamApiError(
                response.status_code, f"{what}: the answer is not a JSON object", retryable=False
            )
        return data


def _elapsed_ms(response: requests.Response) -> float:
    return response.elapsed.total_seconds() * 1000


def _error_text(response: requests.Response) -> str:
    """Stream's error ``message`` (its APIError body), else the start of the body."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, Mapping) and isinstance(data.get("message"), str):
        return str(data["message"])[:_MAX_ERROR_TEXT]
    return response.text[:_MAX_ERROR_TEXT] or response.reason or "error"


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _call_member(item: Any) -> CallMember | None:
    """A ``MemberResponse``; entries without a user id are skipped."""
    if not isinstance(item, Mapping):
        return None
    user = item.get("user")
    if not isinstance(user, Mapping):
        user = {}
    user_id = _text(item.get("user_id")) or _text(user.get("id"))
    if not user_id:
        return None
    return CallMember(user_id, user_display_name(user) or user_id, _text(item.get("role")))


def _stream_device(item: Any) -> StreamDevice | None:
    """A ``DeviceResponse``; entries without a token are skipped."""
    if not isinstance(item, Mapping) or not _text(item.get("id")):
        return None
    return StreamDevice(
        token=item["id"],
        push_provider=_text(item.get("push_provider")),
        voip=item.get("voip") is True,
        disabled=item.get("disabled") is True,
        hardware_id=_text(item.get("hardware_id")) or None,
        push_provider_name=_text(item.get("push_provider_name")) or None,
    )


def _call_type_push_settings(name: str, item: Any) -> CallTypePushSettings:
    """A ``CallTypeResponse``'s ``notification_settings``.  Only an explicit ``false`` switches
    something off: a missing or malformed entry leaves the event on, with callpush's wording
    (a ring that should not ring is a nuisance; a ring that never comes is a missed call)."""
    settings = item.get("notification_settings") if isinstance(item, Mapping) else None
    if not isinstance(settings, Mapping):
        settings = {}
    events: dict[str, EventPushSettings] = {}
    for key, event_type in NOTIFICATION_SETTINGS_EVENTS.items():
        entry = settings.get(key)
        if not isinstance(entry, Mapping):
            continue
        apns = entry.get("apns")
        if not isinstance(apns, Mapping):
            apns = {}
        events[event_type] = EventPushSettings(
            enabled=entry.get("enabled") is not False,
            title=_text(apns.get("title")),
            body=_text(apns.get("body")),
        )
    return CallTypePushSettings(name, settings.get("enabled") is not False, events)

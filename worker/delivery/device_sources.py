"""Where a user's push tokens come from: callpush's own registry, or Stream's devices API.

``Settings.devices.source`` chooses: "local" for tokens registered with callpush (CLI,
``POST /devices``); "stream" for apps whose Stream SDKs register their tokens with Stream
(stream-protocol.md §4.3), which are then mirrored into the local registry.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from sqlalchemy.orm import Session

from worker.push.base import Platform
from worker.storage import devices
from worker.storage.devices import DeviceTarget
from worker.storage.stream_device_mirror import MirroredDevice, sync_stream_devices
from worker.stream.api import StreamApi, StreamApiError, StreamDevice

log = logging.getLogger("callpush.devices")

# Stream's push_provider values we can deliver to (§4.3: firebase | apn | huawei | xiaomi).
PLATFORMS = {"apn": Platform.APNS, "firebase": Platform.FCM}
FETCH_THREADS = 8
CACHE_MAX_USERS = 10_000


class DeviceSource(Protocol):
    def devices_for(self, session: Session, user_ids: Sequence[str]) -> list[DeviceTarget]:
        """The users' devices that may be pushed to; each with a ``devices`` row id."""
        ...

    def close(self) -> None: ...


class LocalRegistry:
    """Tokens registered with callpush itself for one Stream app."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key

    def devices_for(self, session: Session, user_ids: Sequence[str]) -> list[DeviceTarget]:
        return devices.active_devices_for(session, self.api_key, user_ids)

    def close(self) -> None:
        pass


def usable_devices(listed: Iterable[StreamDevice]) -> tuple[MirroredDevice, ...]:
    """Stream's devices we can push to: APNs and FCM tokens that Stream has not disabled.
    Huawei and Xiaomi tokens are skipped (no provider for them here)."""
    usable = []
    for device in listed:
        platform = PLATFORMS.get(device.push_provider)
        if platform is None or device.disabled:
            continue
        # The voip flag means an Apple PushKit token (§4.3); it has no meaning for FCM.
        voip = device.voip and platform is Platform.APNS
        usable.append(
            MirroredDevice(
                platform, device.token, voip, device.hardware_id, device.push_provider_name
            )
        )
    return tuple(usable)


class _DeviceListCache:
    """Per-user device lists for ``ttl`` seconds (§4.3: rate limits are unknown, cache per
    user), so a fan-out does not call Stream once per push.  Thread-safe; bounded."""

    def __init__(self, ttl: float, clock: Callable[[], float], max_users: int) -> None:
        self._ttl = ttl
        self._clock = clock
        self._max_users = max_users
        self._entries: dict[str, tuple[float, tuple[MirroredDevice, ...]]] = {}
        self._lock = threading.Lock()

    def get_fresh(self, user_ids: Iterable[str]) -> dict[str, tuple[MirroredDevice, ...]]:
        now = self._clock()
        with self._lock:
            found = {}
            for user_id in user_ids:
                entry = self._entries.get(user_id)
                if entry is not None and entry[0] > now:
                    found[user_id] = entry[1]
            return found

    def put(self, user_id: str, listed: tuple[MirroredDevice, ...]) -> None:
        if self._ttl <= 0:
            return
        now = self._clock()
        with self._lock:
            self._entries.pop(user_id, None)  # re-inserted last: the dict stays oldest-first
            self._entries[user_id] = (now + self._ttl, listed)
            if len(self._entries) > self._max_users:
                for stale in [u for u, (expires, _) in self._entries.items() if expires <= now]:
                    del self._entries[stale]
                while len(self._entries) > self._max_users:
                    del self._entries[next(iter(self._entries))]


class StreamDevices:
    """Tokens from one Stream app's devices API, mirrored into the local registry under that
    app's API key.

    Every call reconciles the rows with Stream's lists (writing only differences), so a token
    disabled locally in the meantime is never returned, even from the cache.
    """

    def __init__(
        self,
        api: StreamApi,
        cache_seconds: float,
        *,
        max_workers: int = FETCH_THREADS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api_key = api.api_key
        self._api = api
        self._cache = _DeviceListCache(cache_seconds, clock, CACHE_MAX_USERS)
        self._max_workers = max_workers
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def devices_for(self, session: Session, user_ids: Sequence[str]) -> list[DeviceTarget]:
        """Raises :class:`StreamApiError` when a user's list could not be fetched (a partial
        list would silently leave people un-rung); the lists that were fetched stay cached, so
        a retry asks Stream only for the rest."""
        ids = list(dict.fromkeys(user_ids))
        listed = self._cache.get_fresh(ids)
        missing = [u for u in ids if u not in listed]
        # All HTTP happens before the first write, so no database lock waits on Stream.
        listed.update(self._fetch(missing))
        return list(sync_stream_devices(session, self.api_key, listed))

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
        self._api.close()

    def _fetch(self, user_ids: Sequence[str]) -> dict[str, tuple[MirroredDevice, ...]]:
        if not user_ids:
            return {}
        if len(user_ids) == 1:
            return {user_ids[0]: self._fetch_one(user_ids[0])}
        # In copies of the caller's context: the log lines carry the event id and call cid.
        futures = {
            u: self._executor().submit(contextvars.copy_context().run, self._fetch_one, u)
            for u in user_ids
        }
        fetched: dict[str, tuple[MirroredDevice, ...]] = {}
        failure: StreamApiError | None = None
        for user_id, future in futures.items():
            try:
                fetched[user_id] = future.result()
            except StreamApiError as error:
                failure = failure or error
        if failure is not None:
            raise failure
        return fetched

    def _fetch_one(self, user_id: str) -> tuple[MirroredDevice, ...]:
        try:
            listed = usable_devices(self._api.list_devices(user_id))
        except StreamApiError as error:
            log.warning("devices of user %s from Stream: %s", user_id, error)
            raise
        self._cache.put(user_id, listed)
        return listed

    def _executor(self) -> ThreadPoolExecutor:
        # Made on first use, so a process forked after start-up gets its own threads.
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._max_workers, "stream-devices")
            return self._pool


def one_ring_per_phone(targets: Sequence[DeviceTarget]) -> list[DeviceTarget]:
    """Drop a user's FCM token when the same phone (``hardware_id``) also has an APNs VoIP
    token: the VoIP push alone rings it (§4.3: hardware_id exists "to deduplicate pushes across
    push providers (e.g. APNs VoIP and Firebase on the same iOS device)").  For ring targets
    only: a missed-call alert cannot go through a VoIP token.  Order is kept."""
    with_voip = {
        (t.user_id, hardware_id)
        for t in targets
        if (hardware_id := _hardware_id(t)) and t.platform is Platform.APNS and t.voip
    }
    return [
        t
        for t in targets
        if not (t.platform is Platform.FCM and (t.user_id, _hardware_id(t)) in with_voip)
    ]


def _hardware_id(target: DeviceTarget) -> str | None:
    return target.hardware_id or None

"""What the domain needs at run time: settings, database, push sender, templates, Stream's API
and where work is handed on.  Built once per process (after a fork, never before: the APNs
client, HTTP sessions and database pools must not cross a fork), by the Celery app that carries
them (worker/runtime/celery_app.py) or by a command."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from worker.delivery.call_type_settings import CallTypeSettingsCache, push_text, switched_off
from worker.delivery.device_sources import DeviceSource, LocalRegistry, StreamDevices
from worker.delivery.templates import RenderedText, TemplateBook
from worker.foundation.handoff import Handoff, NoHandoff
from worker.foundation.settings import Settings
from worker.push.base import Platform, ProviderRef
from worker.push.providers import build_providers, provider_ref
from worker.push.sender import PushSender
from worker.storage.database import Database
from worker.storage.devices import DeviceTarget
from worker.storage.models import utcnow
from worker.stream.api import StreamApi
from worker.stream.events import CallEvent


@dataclass
class Services:
    settings: Settings
    db: Database
    sender: PushSender
    templates: TemplateBook
    # Where a fan-out's chunks go to be sent (a bulk worker's queue, or inline).
    handoff: Handoff = field(default_factory=NoHandoff)
    now: Callable[[], datetime] = field(default=utcnow)
    # How the domain waits (a ring's retry backoff): replaced with a fake clock in tests.
    sleep: Callable[[float], None] = field(default=time.sleep)
    _apis: dict[str, StreamApi] = field(default_factory=dict)
    _device_sources: dict[str, DeviceSource] = field(default_factory=dict)
    _call_type_settings: dict[str, CallTypeSettingsCache] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _bundle_ids: dict[ProviderRef, str] | None = field(default=None, init=False, repr=False)

    def stream_api(self, api_key: str) -> StreamApi | None:
        """Stream's REST API for the app that sent the event (several apps may be served)."""
        app = self.settings.app_for_key(api_key)
        if app is None:
            return None
        with self._lock:
            if api_key not in self._apis:
                self._apis[api_key] = StreamApi(app, self.settings.stream_api_timeout_seconds)
            return self._apis[api_key]

    def device_source(self, api_key: str) -> DeviceSource:
        """Where the app's devices come from (``devices.source``: local registry or Stream),
        scoped to that app: a webhook of one app never reaches another app's devices."""
        with self._lock:
            source = self._device_sources.get(api_key)
        if source is None:
            api = self.stream_api(api_key) if self.settings.devices.source == "stream" else None
            if api is None:
                source = LocalRegistry(api_key)
            else:
                source = StreamDevices(api, self.settings.devices.cache_seconds)
            with self._lock:
                source = self._device_sources.setdefault(api_key, source)
        return source

    def provider_for(self, api_key: str, device: DeviceTarget) -> ProviderRef:
        """The push provider that sends to ``device`` for an event of the app ``api_key``."""
        app = self.settings.app_for_key(api_key)
        return provider_ref(app, device.platform, device.push_provider_name)

    def bundle_id(self, ref: ProviderRef) -> str:
        """The bundle id (APNs topic base) of the APNs provider ``ref``: [apns]'s, or the app's
        named provider's; "" for a provider that is not configured."""
        if ref.name is None:
            return self.settings.apns.bundle_id
        with self._lock:
            if self._bundle_ids is None:
                self._bundle_ids = {
                    ProviderRef(Platform.APNS, app, name): apns.bundle_id
                    for (app, name), apns in self.settings.named_apns_providers().items()
                }
            return self._bundle_ids.get(ref, "")

    def provider_label(self, api_key: str, device: DeviceTarget) -> str:
        """The delivery row's provider for a push to ``device`` (see ``ProviderSet.label``)."""
        return self.sender.provider_label(self.provider_for(api_key, device))

    def call_type_settings(self, api_key: str) -> CallTypeSettingsCache | None:
        """Stream's call-type push settings of the app, when it follows them
        (``push_settings_source = "stream"``); started (fetching) on first use."""
        app = self.settings.app_for_key(api_key)
        if app is None or app.push_settings_source != "stream":
            return None
        with self._lock:
            cache = self._call_type_settings.get(api_key)
        if cache is None:
            api = self.stream_api(api_key)
            if api is None:  # pragma: no cover - app_for_key found it above
                return None
            fresh = CallTypeSettingsCache(
                api,
                refresh_seconds=self.settings.push_settings.refresh_seconds,
                retry_seconds=self.settings.push_settings.retry_seconds,
            )
            with self._lock:
                cache = self._call_type_settings.setdefault(api_key, fresh)
            cache.start()
        return cache

    def start_background_work(self) -> None:
        """At process start: fetch Stream's push settings of the apps that follow them, so the
        copy is warm before the first ring."""
        for app in self.settings.apps:
            self.call_type_settings(app.api_key)

    def wait_for_background_work(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds per app) for the first fetch of Stream's push
        settings: for one-off commands, which have no time to warm up in the background."""
        for app in self.settings.apps:
            cache = self.call_type_settings(app.api_key)
            if cache is not None:
                cache.wait_warm(timeout)

    def stop_background_work(self) -> None:
        """Stop refreshing Stream's push settings (the copies stay readable)."""
        with self._lock:
            caches = list(self._call_type_settings.values())
        for cache in caches:
            cache.close()

    def push_switched_off(self, api_key: str, event: CallEvent) -> str | None:
        """Why the event sends no push (local ``disabled_events``, or Stream's settings), or
        None.  Reads only what is in memory."""
        return switched_off(self.templates, self.call_type_settings(api_key), event)

    def push_text(
        self, api_key: str, event: CallEvent, receiver_id: str, receiver_name: str = ""
    ) -> RenderedText:
        """Title and body of one receiver's push.  Reads only what is in memory."""
        cache = self.call_type_settings(api_key)
        return push_text(self.templates, cache, event, receiver_id, receiver_name)

    def claim_lease(self) -> timedelta:
        """A SENDING claim older than this belongs to a worker that died mid-send: a live one
        has its provider's answer (or timeout) well within it."""
        longest = max(self.settings.apns.timeout_seconds, self.settings.fcm.timeout_seconds)
        return timedelta(seconds=longest + 3)

    def close(self) -> None:
        self.stop_background_work()
        self.sender.close()
        for source in self._device_sources.values():
            source.close()
        for api in self._apis.values():
            api.close()
        self.db.dispose()


def build_services(settings: Settings, handoff: Handoff | None = None) -> Services:
    services = Services(
        settings=settings,
        db=Database(settings.database_url, durable_commits=False, timeouts=settings.database),
        sender=PushSender(build_providers(settings)),
        templates=TemplateBook.from_settings(settings),
        handoff=handoff or NoHandoff(),
    )
    services.start_background_work()
    return services

"""Builds every push provider of the process from the settings, once, at start-up.

A platform's default provider comes from [apns] / [fcm]; each Stream app may add named providers
(``[apps.apns_providers.<name>]``, ``[apps.fcm_providers.<name>]``), as many as it has in Stream,
and a device goes through the one its ``push_provider_name`` names (:func:`provider_ref`).
Providers with the same effective settings share one client (one aioapns client, one pyfcm
instance), and every APNs client runs in one shared event loop thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from worker.foundation.settings import ApnsSettings, FcmSettings, Settings, StreamAppSettings
from worker.push.base import Platform, ProviderRef, PushProvider
from worker.push.console import ConsoleProvider
from worker.push.event_loop_thread import EventLoopThread

logger = logging.getLogger(__name__)

# A delivery row's provider column holds at most this much (worker/storage/models.py).
MAX_LABEL = 64


@dataclass
class ProviderSet:
    """The platform defaults and the apps' named providers, and what they share (the APNs event
    loop thread)."""

    defaults: dict[Platform, PushProvider]
    named: dict[ProviderRef, PushProvider] = field(default_factory=dict)
    loop_thread: EventLoopThread | None = None

    def get(self, ref: ProviderRef) -> PushProvider | None:
        if ref.name is None:
            return self.defaults.get(ref.platform)
        return self.named.get(ref)

    def label(self, ref: ProviderRef) -> str:
        """What a delivery row records as its provider: the provider's kind ("apns", "fcm",
        "console"), then ":<name>" for a named one; "<platform>:<name>" when that name is not
        configured."""
        provider = self.get(ref)
        kind = provider.name if provider is not None else ref.platform.value
        return (kind if ref.name is None else f"{kind}:{ref.name}")[:MAX_LABEL]

    def distinct(self) -> list[PushProvider]:
        seen: dict[int, PushProvider] = {}
        for provider in [*self.defaults.values(), *self.named.values()]:
            seen.setdefault(id(provider), provider)
        return list(seen.values())

    def close(self) -> None:
        """Close each distinct provider once, then the shared loop thread.  One provider failing
        to close is logged (the redacting log filter keeps secrets out of the traceback,
        worker/foundation/logging_setup.py) and does not stop the others from closing."""
        for provider in self.distinct():
            try:
                provider.close()
            except Exception:
                logger.exception("closing the %s provider failed", provider.name)
        if self.loop_thread is not None:
            self.loop_thread.stop()


def provider_ref(
    app: StreamAppSettings | None, platform: Platform, push_provider_name: str | None
) -> ProviderRef:
    """The provider a device of ``app`` goes through.

    Its ``push_provider_name`` (else the app's default_<platform>_provider) names one of the app's
    providers, which need not exist: the sender then records the push as failed, and the token
    is kept.  An app that names no provider for the platform sends every device of it through
    the platform's default, whatever its name, as before named providers existed."""
    if app is None:
        return ProviderRef(platform)
    if platform is Platform.APNS:
        names, default = set(app.apns_providers), app.default_apns_provider
    else:
        names, default = set(app.fcm_providers), app.default_fcm_provider
    name = push_provider_name or default
    if not names or name is None:
        return ProviderRef(platform)
    return ProviderRef(platform, app.api_key, name)


def build_providers(settings: Settings) -> ProviderSet:
    """A real provider for each configured default and named provider, a
    :class:`ConsoleProvider` for the others (or for all, with ``push_provider = "console"``).

    Imports aioapns/pyfcm only when they are used; reads every key file now, so a bad one
    stops the start, not the first push."""
    console_forced = settings.push_provider == "console"
    built: dict[str, PushProvider] = {}  # effective settings (JSON) -> provider
    # Filled as each provider is built, so a failure half-way closes what was built so far.
    providers = ProviderSet({})

    def apns_provider(apns: ApnsSettings, where: str) -> PushProvider:
        if console_forced or not apns.configured:
            _warn_console(Platform.APNS, where, console_forced, "apns.key_file is not set")
            return ConsoleProvider(Platform.APNS.value)
        key = "apns:" + apns.model_dump_json()
        if key not in built:
            from worker.push.apns import ApnsProvider

            if providers.loop_thread is None:
                providers.loop_thread = EventLoopThread("callpush-apns")
            built[key] = ApnsProvider(apns, loop_thread=providers.loop_thread)
        return built[key]

    def fcm_provider(fcm: FcmSettings, where: str) -> PushProvider:
        if console_forced or not fcm.configured:
            _warn_console(
                Platform.FCM, where, console_forced, "fcm.service_account_file is not set"
            )
            return ConsoleProvider(Platform.FCM.value)
        key = "fcm:" + fcm.model_dump_json()
        if key not in built:
            from worker.push.fcm import FcmProvider

            built[key] = FcmProvider(fcm)
        return built[key]

    try:
        providers.defaults[Platform.APNS] = apns_provider(settings.apns, "the default provider")
        providers.defaults[Platform.FCM] = fcm_provider(settings.fcm, "the default provider")
        for (app, name), apns in settings.named_apns_providers().items():
            ref = ProviderRef(Platform.APNS, app, name)
            providers.named[ref] = apns_provider(apns, ref.describe())
        for (app, name), fcm in settings.named_fcm_providers().items():
            ref = ProviderRef(Platform.FCM, app, name)
            providers.named[ref] = fcm_provider(fcm, ref.describe())
    except BaseException:
        providers.close()
        raise
    return providers


def _warn_console(platform: Platform, where: str, forced: bool, missing: str) -> None:
    why = 'push_provider = "console"' if forced else missing
    logger.warning(
        "%s pushes through %s go to the console provider (logged, not sent): %s",
        platform.value,
        where,
        why,
    )

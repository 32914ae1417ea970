"""Builds the provider for each platform from the settings."""

from __future__ import annotations

import logging

from worker.push.base import Platform, PushProvider
from worker.push.console import ConsoleProvider
from worker.settings import Settings

logger = logging.getLogger(__name__)


def build_providers(settings: Settings) -> dict[Platform, PushProvider]:
    """A real provider per configured platform, a :class:`ConsoleProvider` for the others.

    Imports aioapns/pyfcm only for the platforms that use them.
    """
    providers: dict[Platform, PushProvider] = {}
    console_forced = settings.push_provider == "console"

    if settings.apns.configured and not console_forced:
        from worker.push.apns import ApnsProvider

        providers[Platform.APNS] = ApnsProvider(settings.apns)
    else:
        _warn_console(Platform.APNS, console_forced, "apns.key_file is not set")
        providers[Platform.APNS] = ConsoleProvider(Platform.APNS.value)

    if settings.fcm.configured and not console_forced:
        from worker.push.fcm import FcmProvider

        providers[Platform.FCM] = FcmProvider(settings.fcm)
    else:
        _warn_console(Platform.FCM, console_forced, "fcm.service_account_file is not set")
        providers[Platform.FCM] = ConsoleProvider(Platform.FCM.value)
    return providers


def close_providers(providers: dict[Platform, PushProvider]) -> None:
    """Close each distinct provider once; one failing does not stop the others."""
    seen: set[int] = set()
    for platform, provider in providers.items():
        if id(provider) in seen:
            continue
        seen.add(id(provider))
        try:
            provider.close()
        except Exception:
            logger.exception("closing the %s provider (%s) failed", platform.value, provider.name)


def _warn_console(platform: Platform, forced: bool, missing: str) -> None:
    why = 'push_provider = "console"' if forced else missing
    logger.warning(
        "%s pushes go to the console provider (logged, not sent): %s", platform.value, why
    )

"""Routes built messages to the provider of their platform and sends the platforms in parallel,
so an FCM batch never waits behind an APNs one."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from worker.push.base import Platform, PushMessage, PushOutcome, PushProvider


class PushSender:
    def __init__(self, providers: dict[Platform, PushProvider]) -> None:
        self.providers = providers
        self._pool = ThreadPoolExecutor(max_workers=len(Platform), thread_name_prefix="push-send")

    def provider_name(self, platform: Platform) -> str:
        return self.providers[platform].name

    def send(self, messages: Sequence[PushMessage]) -> list[PushOutcome]:
        by_platform: dict[Platform, list[int]] = {}
        for index, message in enumerate(messages):
            by_platform.setdefault(message.platform, []).append(index)
        futures: dict[Platform, Future[list[PushOutcome]]] = {}
        platforms = list(by_platform)
        # The last platform runs on the calling thread: one thread hop fewer on the ring path.
        for platform in platforms[:-1]:
            batch = [messages[i] for i in by_platform[platform]]
            futures[platform] = self._pool.submit(self.providers[platform].send_batch, batch)
        results: dict[Platform, list[PushOutcome]] = {}
        if platforms:
            last = platforms[-1]
            results[last] = self.providers[last].send_batch(
                [messages[i] for i in by_platform[last]]
            )
        for platform, future in futures.items():
            results[platform] = future.result()
        outcomes: list[PushOutcome | None] = [None] * len(messages)
        for platform, indexes in by_platform.items():
            for index, outcome in zip(indexes, results[platform], strict=True):
                outcomes[index] = outcome
        return [outcome for outcome in outcomes if outcome is not None]

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        for provider in self.providers.values():
            provider.close()

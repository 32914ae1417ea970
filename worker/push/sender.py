"""Routes built messages to the provider of their platform and sends the platforms in parallel,
so an FCM batch never waits behind an APNs one."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from worker.push.base import AnswerCallback, Platform, PushMessage, PushOutcome, PushProvider


class PushSender:
    def __init__(self, providers: dict[Platform, PushProvider]) -> None:
        self.providers = providers
        self._pool = ThreadPoolExecutor(max_workers=len(Platform), thread_name_prefix="push-send")

    def provider_name(self, platform: Platform) -> str:
        return self.providers[platform].name

    def send(
        self, messages: Sequence[PushMessage], on_answer: AnswerCallback | None = None
    ) -> list[PushOutcome]:
        """Send every message; return one outcome per message, in order.

        With ``on_answer``, each message's outcome is also passed to it exactly once, as soon as
        its provider has it, and all of them before this returns."""
        by_platform: dict[Platform, list[int]] = {}
        for index, message in enumerate(messages):
            by_platform.setdefault(message.platform, []).append(index)
        answers = _AnswerOnce(on_answer) if on_answer is not None else None
        futures: dict[Platform, Future[list[PushOutcome]]] = {}
        platforms = list(by_platform)
        # The last platform runs on the calling thread: one thread hop fewer on the ring path.
        for platform in platforms[:-1]:
            futures[platform] = self._pool.submit(
                self._send_platform, platform, messages, by_platform[platform], answers
            )
        results: dict[Platform, list[PushOutcome]] = {}
        if platforms:
            last = platforms[-1]
            results[last] = self._send_platform(last, messages, by_platform[last], answers)
        for platform, future in futures.items():
            results[platform] = future.result()
        outcomes: list[PushOutcome | None] = [None] * len(messages)
        for platform, indexes in by_platform.items():
            for index, outcome in zip(indexes, results[platform], strict=True):
                outcomes[index] = outcome
        complete = [outcome for outcome in outcomes if outcome is not None]
        if answers is not None:
            answers.finish(complete)
        return complete

    def _send_platform(
        self,
        platform: Platform,
        messages: Sequence[PushMessage],
        indexes: list[int],
        answers: _AnswerOnce | None,
    ) -> list[PushOutcome]:
        batch = [messages[i] for i in indexes]
        if answers is None:
            return self.providers[platform].send_batch(batch)
        return self.providers[platform].send_batch(
            batch, lambda position, outcome: answers.answer(indexes[position], outcome)
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        for provider in self.providers.values():
            provider.close()


class _AnswerOnce:
    """Passes each message's outcome on exactly once: as the provider reports it, or, for what
    it did not report (a batch that timed out as a whole), from the final list.  An answer the
    provider reports after the batch is over is dropped: the final list already stood for it."""

    def __init__(self, on_answer: AnswerCallback) -> None:
        self._on_answer = on_answer
        self._lock = threading.Lock()
        self._done: set[int] = set()
        self._finished = False

    def answer(self, index: int, outcome: PushOutcome) -> None:
        with self._lock:
            if self._finished or index in self._done:
                return
            self._done.add(index)
        self._on_answer(index, outcome)

    def finish(self, outcomes: Sequence[PushOutcome]) -> None:
        with self._lock:
            self._finished = True
            missing = [i for i in range(len(outcomes)) if i not in self._done]
        for index in missing:
            self._on_answer(index, outcomes[index])

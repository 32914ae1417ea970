"""Routes built messages to their provider (the platform default or an app's named provider,
``PushMessage.provider``) and sends each provider's batch in parallel, so an FCM batch never
waits behind an APNs one, nor a debug build's sandbox provider behind production."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from worker.push.base import (
    AnswerCallback,
    Platform,
    ProviderRef,
    PushMessage,
    PushOutcome,
    PushProvider,
    PushResult,
)
from worker.push.providers import ProviderSet


class PushSender:
    def __init__(self, providers: ProviderSet | Mapping[Platform, PushProvider]) -> None:
        self.providers = (
            providers if isinstance(providers, ProviderSet) else ProviderSet(dict(providers))
        )
        self._pool = ThreadPoolExecutor(
            max_workers=max(len(Platform), len(self.providers.distinct())),
            thread_name_prefix="push-send",
        )

    def provider_name(self, platform: Platform) -> str:
        """The name of the platform's default provider ("apns", "fcm" or "console")."""
        return self.providers.defaults[platform].name

    def provider_label(self, ref: ProviderRef) -> str:
        """What the delivery row records as the provider of a push through ``ref``."""
        return self.providers.label(ref)

    def send(
        self, messages: Sequence[PushMessage], on_answer: AnswerCallback | None = None
    ) -> list[PushOutcome]:
        """Send every message; return one outcome per message, in order.

        A message whose provider is not configured is not sent: it is ``FAILED`` with the reason
        (and its token is kept).  With ``on_answer``, each message's outcome is also passed to it
        exactly once, as soon as its provider has it, and all of them before this returns."""
        answers = _AnswerOnce(on_answer) if on_answer is not None else None
        outcomes: list[PushOutcome | None] = [None] * len(messages)
        groups: dict[int, tuple[PushProvider, list[int]]] = {}
        for index, message in enumerate(messages):
            ref = message.provider or ProviderRef(message.platform)
            provider = self.providers.get(ref)
            if provider is None:
                outcomes[index] = outcome = _not_configured(ref)
                if answers is not None:
                    answers.answer(index, outcome)
                continue
            groups.setdefault(id(provider), (provider, []))[1].append(index)
        batches = list(groups.values())
        futures: list[tuple[list[int], Future[list[PushOutcome]]]] = []
        # The last batch runs on the calling thread: one thread hop fewer on the ring path.  The
        # others run in a copy of this thread's context, so what they log carries the event id
        # and call cid (worker/foundation/logging_setup.py); a pool thread has a context of its own.
        for provider, indexes in batches[:-1]:
            context = contextvars.copy_context()
            futures.append(
                (
                    indexes,
                    self._pool.submit(
                        context.run, self._send_batch, provider, messages, indexes, answers
                    ),
                )
            )
        results: list[tuple[list[int], list[PushOutcome]]] = []
        if batches:
            provider, indexes = batches[-1]
            results.append((indexes, self._send_batch(provider, messages, indexes, answers)))
        results += [(indexes, future.result()) for indexes, future in futures]
        for indexes, sent in results:
            for index, outcome in zip(indexes, sent, strict=True):
                outcomes[index] = outcome
        complete = [outcome for outcome in outcomes if outcome is not None]
        if answers is not None:
            answers.finish(complete)
        return complete

    @staticmethod
    def _send_batch(
        provider: PushProvider,
        messages: Sequence[PushMessage],
        indexes: list[int],
        answers: _AnswerOnce | None,
    ) -> list[PushOutcome]:
        batch = [messages[i] for i in indexes]
        if answers is None:
            return provider.send_batch(batch)
        return provider.send_batch(
            batch, lambda position, outcome: answers.answer(indexes[position], outcome)
        )

    def close(self) -> None:
        """Stop the send threads and close each provider once: one that fails to close is
        logged and the others still close (:meth:`ProviderSet.close`)."""
        self._pool.shutdown(wait=False)
        self.providers.close()


def _not_configured(ref: ProviderRef) -> PushOutcome:
    # FAILED, never TOKEN_INVALID: the token may be fine, the configuration is what is missing.
    if ref.name is None:
        reason = f"{ref.describe()} is not configured"
    else:
        reason = f"push provider {ref.name!r} is not configured for app {ref.app}"
    return PushOutcome(PushResult.FAILED, reason=reason)


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

"""A PushProvider (our own seam) whose answers a test scripts, for domain tests.

The real aioapns / pyfcm adapters are tested against the fakes in tests/worker/push and the
end-to-end tests; here only the domain's reaction to each result is under test.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from worker.push.base import AnswerCallback, PushMessage, PushOutcome


class ScriptedProvider:
    def __init__(self, name: str, answer: Callable[[PushMessage, int], PushOutcome] | None = None):
        self.name = name
        self.sent: list[PushMessage] = []
        self._answer = answer or (lambda _m, _n: PushOutcome.sent())
        self._attempts: dict[str, int] = {}
        self._lock = threading.Lock()

    def send_batch(
        self, messages: Sequence[PushMessage], on_answer: AnswerCallback | None = None
    ) -> list[PushOutcome]:
        outcomes = []
        for index, message in enumerate(messages):
            with self._lock:
                self.sent.append(message)
                n = self._attempts[message.token] = self._attempts.get(message.token, 0) + 1
            outcome = self._answer(message, n)
            if on_answer is not None:
                on_answer(index, outcome)
            outcomes.append(outcome)
        return outcomes

    def tokens(self) -> list[str]:
        return [m.token for m in self.sent]

    def close(self) -> None:
        pass

"""A provider that sends nothing: it logs and keeps what would have been sent.

Used when a platform has no credentials (or ``push_provider = "console"``), so the embedded mode
and local development run the whole pipeline without Apple or Google.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Sequence

from worker.foundation.logging_setup import redact_token
from worker.push.base import AnswerCallback, PushMessage, PushOutcome, PushResult

logger = logging.getLogger("callpush.push.console")

DEFAULT_KEEP = 1000


class ConsoleProvider:
    """Records pushes instead of sending them; every message is ``SENT`` with reason "console"."""

    name = "console"

    def __init__(self, platform_name: str = "console", *, keep: int = DEFAULT_KEEP) -> None:
        self.platform_name = platform_name
        # deque.append is atomic, so concurrent send_batch calls need no lock; the oldest
        # messages fall off once ``keep`` is reached.
        self.sent: deque[PushMessage] = deque(maxlen=keep)

    def send_batch(
        self, messages: Sequence[PushMessage], on_answer: AnswerCallback | None = None
    ) -> list[PushOutcome]:
        outcomes = []
        for index, message in enumerate(messages):
            logger.info(
                "console push [%s] platform=%s kind=%s topic=%s token=%s payload=%s",
                self.platform_name,
                message.platform.value,
                message.kind.value,
                message.topic or "-",
                redact_token(message.token),
                json.dumps(message.payload, sort_keys=True, default=str, ensure_ascii=False),
            )
            self.sent.append(message)
            outcome = PushOutcome(
                PushResult.SENT, reason="console", provider_message_id=message.message_id
            )
            if on_answer is not None:
                on_answer(index, outcome)
            outcomes.append(outcome)
        return outcomes

    def close(self) -> None:
        pass

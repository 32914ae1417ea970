"""PushSender: routing by platform, and each answer passed on exactly once, as it arrives."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence

import pytest

from tests.worker.scripted_provider import ScriptedProvider
from worker.push.base import (
    AnswerCallback,
    Platform,
    ProviderRef,
    PushKind,
    PushMessage,
    PushOutcome,
    PushResult,
)
from worker.push.providers import ProviderSet
from worker.push.sender import PushSender


def message(platform: Platform, token: str) -> PushMessage:
    kind = PushKind.ALERT if platform is Platform.APNS else PushKind.DATA
    return PushMessage(platform=platform, kind=kind, token=token, payload={})


class Silent:
    """Answers only through its return value, like a batch that timed out as a whole."""

    name = "silent"

    def send_batch(
        self, messages: Sequence[PushMessage], on_answer: AnswerCallback | None = None
    ) -> list[PushOutcome]:
        return [PushOutcome(PushResult.RETRY, reason="timeout") for _ in messages]

    def close(self) -> None:
        pass


class Repeating(Silent):
    """Reports every answer twice: the sender must pass each on once."""

    def send_batch(
        self, messages: Sequence[PushMessage], on_answer: AnswerCallback | None = None
    ) -> list[PushOutcome]:
        outcomes = [PushOutcome.sent() for _ in messages]
        for index, outcome in enumerate(outcomes):
            assert on_answer is not None
            on_answer(index, outcome)
            on_answer(index, PushOutcome(PushResult.FAILED, reason="again"))
        return outcomes


def collect() -> tuple[list[tuple[int, PushOutcome]], AnswerCallback]:
    seen: list[tuple[int, PushOutcome]] = []
    lock = threading.Lock()

    def on_answer(index: int, outcome: PushOutcome) -> None:
        with lock:
            seen.append((index, outcome))

    return seen, on_answer


MIXED = [message(Platform.FCM, "f1"), message(Platform.APNS, "a1"), message(Platform.FCM, "f2")]


@pytest.fixture
def sender() -> Iterator[PushSender]:
    """APNs answers sent; FCM answers failed, with the token as the reason."""
    apns = ScriptedProvider("apns")
    fcm = ScriptedProvider("fcm", lambda m, _n: PushOutcome(PushResult.FAILED, reason=m.token))
    sender = PushSender({Platform.APNS: apns, Platform.FCM: fcm})
    yield sender
    sender.close()


def test_outcomes_come_back_in_message_order_across_platforms(sender: PushSender) -> None:
    outcomes = sender.send(MIXED)
    assert [o.result for o in outcomes] == [PushResult.FAILED, PushResult.SENT, PushResult.FAILED]
    assert [o.reason for o in outcomes] == ["f1", "", "f2"]


def test_each_answer_is_passed_on_once_with_its_index_in_the_whole_send(
    sender: PushSender,
) -> None:
    seen, on_answer = collect()
    outcomes = sender.send(MIXED, on_answer=on_answer)
    assert sorted(index for index, _ in seen) == [0, 1, 2]
    assert dict(seen) == dict(enumerate(outcomes))


def test_answers_a_provider_did_not_report_come_from_its_final_list() -> None:
    sender = PushSender({Platform.APNS: Silent(), Platform.FCM: Repeating()})
    messages = [message(Platform.APNS, "a1"), message(Platform.FCM, "f1")]
    seen, on_answer = collect()
    outcomes = sender.send(messages, on_answer=on_answer)
    assert sorted((i, o.result) for i, o in seen) == [(0, PushResult.RETRY), (1, PushResult.SENT)]
    assert [o.result for o in outcomes] == [PushResult.RETRY, PushResult.SENT]
    sender.close()


class Closing(Silent):
    """Counts its closes; ``fail`` makes each close raise after counting."""

    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.fail = fail
        self.closed = 0

    def close(self) -> None:
        self.closed += 1
        if self.fail:
            raise RuntimeError(f"{self.name} cannot close")


def test_close_closes_each_provider_once_even_when_one_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failing, shared, named = Closing("failing", fail=True), Closing("shared"), Closing("named")
    providers = ProviderSet(
        {Platform.APNS: failing, Platform.FCM: shared},
        {
            ProviderRef(Platform.APNS, "app", "debug"): named,
            ProviderRef(Platform.FCM, "app", "android"): shared,
        },
    )
    caplog.set_level(logging.ERROR)
    PushSender(providers).close()
    assert (failing.closed, shared.closed, named.closed) == (1, 1, 1)
    [logged] = caplog.records
    assert logged.getMessage() == "closing the failing provider failed"
    assert logged.exc_info is not None

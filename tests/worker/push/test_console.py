"""ConsoleProvider: records and logs instead of sending."""

from __future__ import annotations

import json
import logging
import threading

import pytest

from worker.push.base import Platform, PushKind, PushMessage, PushResult
from worker.push.console import ConsoleProvider

TOKEN = "c0ffee" * 10 + "beef"


def test_records_logs_and_reports_sent(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="callpush.push.console")
    provider = ConsoleProvider("apns")
    message = PushMessage(
        Platform.APNS,
        PushKind.VOIP,
        TOKEN,
        {"aps": {}, "stream": {"call_cid": "default:c1"}},
        topic="com.example.callpush.voip",
        message_id="m-1",
    )
    [outcome] = provider.send_batch([message])
    assert (outcome.result, outcome.reason, outcome.provider_message_id) == (
        PushResult.SENT,
        "console",
        "m-1",
    )
    assert list(provider.sent) == [message]
    [record] = caplog.records
    assert record.name == "callpush.push.console"
    assert record.levelno == logging.INFO
    line = record.getMessage()
    assert "platform=apns" in line
    assert "kind=voip" in line
    assert "topic=com.example.callpush.voip" in line
    assert json.dumps(message.payload, sort_keys=True) in line
    assert TOKEN not in caplog.text
    assert "c0ffee…beef" in line
    assert provider.name == "console"
    provider.close()


def test_keeps_only_the_last_messages() -> None:
    provider = ConsoleProvider(keep=3)
    messages = [PushMessage(Platform.FCM, PushKind.DATA, f"t{i}", {"n": str(i)}) for i in range(5)]
    outcomes = provider.send_batch(messages)
    assert [o.result for o in outcomes] == [PushResult.SENT] * 5
    assert [m.token for m in provider.sent] == ["t2", "t3", "t4"]


def test_concurrent_batches() -> None:
    provider = ConsoleProvider()
    message = PushMessage(Platform.FCM, PushKind.DATA, "tok", {"a": "b"})
    threads = [
        threading.Thread(target=provider.send_batch, args=([message] * 50,)) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(provider.sent) == 400

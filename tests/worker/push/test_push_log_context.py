"""Lines logged on the push senders' own threads (the sender's pool, FCM's pool, the APNs event
loop) carry the event id and call cid of the event being pushed, and a key APNs refuses counts
as an authentication failure.  Real aioapns and pyfcm against the fakes."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from tests.fakes.credentials import PushCredentials, make_apns_key
from tests.fakes.fake_apns import FakeApns
from tests.fakes.pytest_plugin import apns_settings_for
from worker.delivery.push_outcomes import push_answer
from worker.foundation import metrics
from worker.foundation.logging_setup import configure_logging, log_context
from worker.foundation.settings import ApnsSettings, FcmSettings
from worker.push.apns import ApnsProvider
from worker.push.base import Platform, PushKind, PushMessage, PushResult
from worker.push.fcm import FcmProvider
from worker.push.sender import PushSender
from worker.storage.models import utcnow

EVENT_ID = 4242
CALL_CID = "default:log-context-call"
# The fakes answer these with 429 and 500: each provider logs a warning about the push.
THROTTLED_APNS = "throttle" + "ab" * 28
FAILING_FCM = "internal-log-context-token"


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The process's real logging set-up (JSON lines, context and redaction filters) into a
    buffer; put back as it was afterwards."""
    root = logging.getLogger()
    level = root.level
    buffer = io.StringIO()
    handler = configure_logging("INFO", json=True, stream=buffer)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def lines(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def test_lines_logged_on_the_senders_threads_carry_the_event_and_call(
    json_log: io.StringIO, apns_settings: ApnsSettings, fcm_settings: FcmSettings
) -> None:
    sender = PushSender(
        {Platform.APNS: ApnsProvider(apns_settings), Platform.FCM: FcmProvider(fcm_settings)}
    )
    # The APNs batch goes to the sender's pool (only the last batch stays on this thread) and
    # on to the APNs event loop thread; each FCM message goes to FCM's own pool.
    messages = [
        PushMessage(Platform.APNS, PushKind.VOIP, THROTTLED_APNS, {"aps": {}}),
        PushMessage(Platform.FCM, PushKind.DATA, FAILING_FCM, {"type": "call.ring"}),
    ]
    try:
        with log_context(event_id=EVENT_ID, call_cid=CALL_CID):
            outcomes = sender.send(messages)
    finally:
        sender.close()
    assert [o.result for o in outcomes] == [PushResult.RETRY, PushResult.RETRY]

    logged = lines(json_log)
    apns = [
        e for e in logged if e["logger"] == "worker.push.apns" and "APNs push to" in e["message"]
    ]
    fcm = [e for e in logged if e["logger"] == "worker.push.fcm" and "FCM push to" in e["message"]]
    assert apns and fcm, logged
    for entry in apns + fcm:
        assert (entry.get("event_id"), entry.get("call_cid")) == (EVENT_ID, CALL_CID), entry


def test_pool_threads_do_not_keep_the_previous_events_context(
    json_log: io.StringIO, fcm_settings: FcmSettings
) -> None:
    """A pool thread that logged for one event logs nothing of it for a push sent without one."""
    provider = FcmProvider(fcm_settings.model_copy(update={"max_workers": 1}))
    message = PushMessage(Platform.FCM, PushKind.DATA, FAILING_FCM, {"type": "call.ring"})
    try:
        with log_context(event_id=EVENT_ID, call_cid=CALL_CID):
            provider.send_batch([message])
        provider.send_batch([message])
    finally:
        provider.close()
    warnings = [e for e in lines(json_log) if "FCM push to" in e["message"]]
    assert len(warnings) == 2
    assert warnings[0].get("event_id") == EVENT_ID
    assert "event_id" not in warnings[1] and "call_cid" not in warnings[1]


def test_a_key_apns_refuses_counts_as_an_authentication_failure(
    json_log: io.StringIO,
    fake_apns: FakeApns,
    push_credentials: PushCredentials,
    tmp_path: Path,
) -> None:
    """An APNs key that is not the one Apple knows (revoked, or the wrong key id) gets 403
    InvalidProviderToken: counted in callpush_push_auth_failures_total, logged with the event."""
    other_key = tmp_path / "AuthKey_REVOKED.p8"
    other_key.write_text(make_apns_key()[0])
    provider = ApnsProvider(apns_settings_for(fake_apns, push_credentials, key_file=other_key))
    labels = {"provider": "apns", "reason": "InvalidProviderToken"}
    before = REGISTRY.get_sample_value("callpush_push_auth_failures_total", labels) or 0.0
    try:
        with log_context(event_id=EVENT_ID, call_cid=CALL_CID):
            outcomes = provider.send_batch(
                [PushMessage(Platform.APNS, PushKind.VOIP, "ab" * 32, {"aps": {}})]
            )
    finally:
        provider.close()
    assert (outcomes[0].result, outcomes[0].reason) == (PushResult.FAILED, "InvalidProviderToken")

    metrics.record_push_answers([push_answer("apns", "apns", outcomes[0])], utcnow())
    assert REGISTRY.get_sample_value("callpush_push_auth_failures_total", labels) == before + 1
    refused = [e for e in lines(json_log) if "rejected our provider token" in e["message"]]
    assert refused and refused[0].get("event_id") == EVENT_ID


def test_lines_about_an_apns_connection_do_not_name_the_event_that_opened_it(
    json_log: io.StringIO, apns_settings: ApnsSettings
) -> None:
    """The connection opened for one event's push serves the next event's: when it is lost
    then, its lines name no event (asyncio would have them name the first), while the lost
    push's own line names its event."""
    logging.getLogger("aioapns").setLevel(logging.DEBUG)
    provider = ApnsProvider(apns_settings.model_copy(update={"max_connections": 1}))
    try:
        with log_context(event_id=1, call_cid="default:opened-it"):
            first = provider.send_batch([PushMessage(Platform.APNS, PushKind.VOIP, "ab" * 32, {})])
        dropped = PushMessage(
            Platform.APNS, PushKind.VOIP, "drop" + "cd" * 30, {}, at_most_once=True
        )
        with log_context(event_id=2, call_cid="default:lost-on-it"):
            second = provider.send_batch([dropped])
    finally:
        provider.close()
        logging.getLogger("aioapns").setLevel(logging.NOTSET)
    assert first[0].result is PushResult.SENT
    assert second[0].result is PushResult.UNCONFIRMED

    logged = lines(json_log)
    lost = [e for e in logged if e["logger"] == "aioapns" and "lost" in e["message"]]
    assert lost, [e["message"] for e in logged]
    assert all("event_id" not in e and "call_cid" not in e for e in lost), lost
    unanswered = [e for e in logged if "APNs push to" in e["message"]]
    assert unanswered and all(e.get("event_id") == 2 for e in unanswered), unanswered

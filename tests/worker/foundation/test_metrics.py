"""Prometheus metrics: the counters move where the facts are recorded (a provider's answer, a
webhook's answer), the latency histogram observes, and several processes add up."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import textwrap
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.project_version import pyproject_version
from webhook_app import create_app
from worker.delivery.push_outcomes import push_answer, record_push_outcomes
from worker.foundation import metrics
from worker.foundation.settings import load_settings
from worker.push.base import Platform, PushKind, PushOutcome, PushResult
from worker.runtime import queue_metrics
from worker.runtime.celery_app import create_celery
from worker.storage import deliveries, devices
from worker.storage.database import Database
from worker.storage.inbox import NewWebhook, store_webhook
from worker.storage.migrations import upgrade_to_head
from worker.storage.models import Device, utcnow
from worker.stream import samples as sample_events

API_KEY = "metrics-key"
SECRET = "metrics-secret-0123456789abcdef0123"
VOIP = "ab" * 32
GONE = "cd" * 32
ANDROID = "android-metrics-token"


def sample(name: str, **labels: str) -> float:
    """The current value in this process's registry (0 when the labels were never used)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def db(sqlite_url):
    upgrade_to_head(sqlite_url)
    database = Database(sqlite_url)
    yield database
    database.dispose()


def claims_for_event(db: Database, tokens: list[tuple[Platform, str, PushKind]]):
    with db.transaction() as session:
        stored = store_webhook(
            session,
            NewWebhook(
                webhook_id=f"wh-{utcnow().timestamp()}",
                api_key="k",
                event_type="call.ring",
                body="{}",
            ),
        )
        for platform, token, _kind in tokens:
            devices.add_device(
                session, api_key="k", user_id="bob", platform=platform, token=token, voip=True
            )
        found = {d.token: d for d in devices.active_devices_for(session, "k", ["bob"])}
        targets = [(found[token], kind, platform.value) for platform, token, kind in tokens]
        claims = deliveries.claim_deliveries(
            session, stored.event_id, targets, timedelta(seconds=10)
        )
    by_token = {claim.device.token: claim for claim in claims}
    return stored.event_id, [by_token[token] for _, token, _ in tokens]


def test_recorded_outcomes_count_pushes_latency_and_disabled_tokens(db):
    event_id, claims = claims_for_event(
        db,
        [
            (Platform.APNS, VOIP, PushKind.VOIP),
            (Platform.APNS, GONE, PushKind.VOIP),
            (Platform.FCM, ANDROID, PushKind.DATA),
        ],
    )
    outcomes = [
        PushOutcome.sent(),
        PushOutcome(PushResult.TOKEN_INVALID, reason="Unregistered", status_code=410),
        PushOutcome(PushResult.RETRY, reason="UNAVAILABLE", status_code=503),
    ]
    before = {
        "apns_sent": sample(
            "callpush_pushes_total", provider="apns", platform="apns", result="sent"
        ),
        "apns_invalid": sample(
            "callpush_pushes_total", provider="apns", platform="apns", result="token_invalid"
        ),
        "fcm_retry": sample(
            "callpush_pushes_total", provider="fcm", platform="fcm", result="retry"
        ),
        "disabled": sample("callpush_tokens_disabled_total", reason="Unregistered"),
        "latency_count": sample("callpush_push_latency_seconds_count"),
        "latency_le_1s": sample("callpush_push_latency_seconds_bucket", le="1.0"),
        "latency_le_100ms": sample("callpush_push_latency_seconds_bucket", le="0.1"),
    }
    received_at = utcnow() - timedelta(milliseconds=250)

    record_push_outcomes(
        db, event_id, received_at, claims, outcomes, provider_of=lambda platform: platform.value
    )

    assert sample("callpush_pushes_total", provider="apns", platform="apns", result="sent") == (
        before["apns_sent"] + 1
    )
    assert sample(
        "callpush_pushes_total", provider="apns", platform="apns", result="token_invalid"
    ) == (before["apns_invalid"] + 1)
    assert sample("callpush_pushes_total", provider="fcm", platform="fcm", result="retry") == (
        before["fcm_retry"] + 1
    )
    assert sample("callpush_tokens_disabled_total", reason="Unregistered") == before["disabled"] + 1
    # One observation per provider answer, each ≥ 250 ms after the webhook and well under 1 s.
    assert sample("callpush_push_latency_seconds_count") == before["latency_count"] + 3
    assert sample("callpush_push_latency_seconds_bucket", le="1.0") == before["latency_le_1s"] + 3
    assert sample("callpush_push_latency_seconds_bucket", le="0.1") == before["latency_le_100ms"]
    with db.transaction() as session:
        gone = session.query(Device).filter_by(token=GONE).one()
        assert gone.disabled_at is not None


def test_the_provider_label_is_the_kind_of_the_claims_provider(db):
    """A named provider's pushes count under its kind ("apns", "console"), never its name: the
    label's values stay bounded whatever the apps configure."""
    event_id, claims = claims_for_event(
        db, [(Platform.APNS, VOIP, PushKind.VOIP), (Platform.FCM, ANDROID, PushKind.DATA)]
    )
    claims = [
        dataclasses.replace(claims[0], provider="console:ios-voip-debug"),
        dataclasses.replace(claims[1], provider="fcm:android-2"),
    ]
    console = sample("callpush_pushes_total", provider="console", platform="apns", result="sent")
    fcm = sample("callpush_pushes_total", provider="fcm", platform="fcm", result="sent")
    record_push_outcomes(
        db, event_id, utcnow(), claims, [PushOutcome.sent(), PushOutcome.sent()], provider_of=str
    )
    assert sample("callpush_pushes_total", provider="console", platform="apns", result="sent") == (
        console + 1
    )
    assert sample("callpush_pushes_total", provider="fcm", platform="fcm", result="sent") == fcm + 1
    assert not sample(
        "callpush_pushes_total", provider="fcm:android-2", platform="fcm", result="sent"
    )


def test_the_provider_is_inferred_when_not_given(db):
    """Claims without a provider label, and no ``provider_of``: the console provider is told
    apart by its answer, the real providers are named after their platform."""
    event_id, claims = claims_for_event(
        db, [(Platform.APNS, VOIP, PushKind.VOIP), (Platform.FCM, ANDROID, PushKind.DATA)]
    )
    claims = [dataclasses.replace(claim, provider="") for claim in claims]
    console = sample("callpush_pushes_total", provider="console", platform="apns", result="sent")
    fcm = sample("callpush_pushes_total", provider="fcm", platform="fcm", result="sent")
    outcomes = [PushOutcome(PushResult.SENT, reason="console"), PushOutcome.sent()]
    record_push_outcomes(db, event_id, utcnow(), claims, outcomes)
    assert sample("callpush_pushes_total", provider="console", platform="apns", result="sent") == (
        console + 1
    )
    assert sample("callpush_pushes_total", provider="fcm", platform="fcm", result="sent") == fcm + 1


@pytest.fixture
def client(sqlite_url, monkeypatch):
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    settings = load_settings(
        database_url=sqlite_url,
        apps=[{"api_key": API_KEY, "api_secrets": [SECRET]}],
        max_body_bytes=16 * 1024,
    )
    upgrade_to_head(sqlite_url)
    database = Database(sqlite_url)
    celery = create_celery(settings)
    yield create_app(settings, db=database, celery=celery).test_client()
    database.dispose()


def webhooks(event_type: str, outcome: str) -> float:
    return sample("callpush_webhooks_total", type=event_type, outcome=outcome)


def test_each_webhook_answer_is_counted_by_type_and_outcome(client):
    ring = sample_events.ring_event("alice", ["bob"])
    body, headers = sample_events.signed_request(ring, api_key=API_KEY, secret=SECRET)
    ended = sample_events.call_event("call.ended", ring["call_cid"])
    ended_body, ended_headers = sample_events.signed_request(ended, api_key=API_KEY, secret=SECRET)
    other = {"type": "call.member_added", "call_cid": ring["call_cid"]}
    other_body, other_headers = sample_events.signed_request(other, api_key=API_KEY, secret=SECRET)
    big = dict(ring, padding="x" * 20_000)
    big_body, big_headers = sample_events.signed_request(big, api_key=API_KEY, secret=SECRET)
    bad_json_headers = sample_events.signed_request({}, api_key=API_KEY, secret=SECRET)[1]
    before = {
        key: webhooks(*key)
        for key in [
            ("call.ring", "accepted"),
            ("call.ring", "duplicate"),
            ("call.ended", "processed"),
            ("call.member_added", "ignored"),
            ("unknown", "401"),
            ("unknown", "413"),
            ("unknown", "400"),
        ]
    }

    answers = [
        client.post("/webhooks/stream", data=body, headers=headers).status_code,
        client.post("/webhooks/stream", data=body, headers=headers).status_code,
        client.post("/webhooks/stream", data=ended_body, headers=ended_headers).status_code,
        client.post("/webhooks/stream", data=other_body, headers=other_headers).status_code,
        client.post(
            "/webhooks/stream", data=body, headers=headers | {"X-Signature": "0" * 64}
        ).status_code,
        client.post("/webhooks/stream", data=big_body, headers=big_headers).status_code,
    ]
    # A signed body that is not JSON: 400 before its type is known.
    from worker.stream.signature import expected_signature

    not_json = b"not json"
    answers.append(
        client.post(
            "/webhooks/stream",
            data=not_json,
            headers=bad_json_headers | {"X-Signature": expected_signature(not_json, SECRET)},
        ).status_code
    )
    assert answers == [202, 200, 200, 200, 401, 413, 400]
    after = {key: webhooks(*key) for key in before}
    assert {key: after[key] - before[key] for key in before} == dict.fromkeys(before, 1.0)


CHILD = textwrap.dedent(
    """
    import os, sys
    from datetime import timedelta
    from prometheus_client import values
    from worker.foundation import metrics
    from worker.delivery.push_outcomes import push_answer
    from worker.push.base import PushOutcome, PushResult
    from worker.storage.models import utcnow

    assert values.ValueClass is not values.MutexValue, "not in multiprocess mode"
    for _ in range(int(sys.argv[1])):
        metrics.record_webhook("call.ring", "accepted")
        metrics.record_push_answers(
            [push_answer("apns", "apns", PushOutcome.sent())], utcnow() - timedelta(milliseconds=30)
        )
    metrics.record_tokens_disabled("Unregistered", 1)
    print(os.getpid())
    """
)


def run_child(directory, count: int) -> int:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(count)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(done.stdout.strip())


def families(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_several_processes_add_up_in_multiprocess_mode(tmp_path):
    """Two processes (as two gunicorn workers or two Celery pool processes) write to the shared
    directory; a scrape reads the sum, also after both are marked dead."""
    pids = [run_child(tmp_path, 2), run_child(tmp_path, 3)]
    assert len(set(pids)) == 2 and len(list(tmp_path.glob("*.db"))) >= 2

    for pid in pids:
        metrics.mark_process_dead(pid)  # no-op here (no multiprocess dir in this process)
    from prometheus_client import multiprocess

    for pid in pids:
        multiprocess.mark_process_dead(pid, str(tmp_path))

    text = generate_latest(queue_metrics.build_registry(None, (), path=str(tmp_path))).decode()
    values = families(text)
    assert (
        values[("callpush_webhooks_total", (("outcome", "accepted"), ("type", "call.ring")))] == 5
    )
    key = (
        "callpush_pushes_total",
        (("platform", "apns"), ("provider", "apns"), ("result", "sent")),
    )
    assert values[key] == 5
    assert values[("callpush_tokens_disabled_total", (("reason", "Unregistered"),))] == 2
    assert values[("callpush_push_latency_seconds_count", ())] == 5
    assert values[("callpush_push_latency_seconds_bucket", (("le", "0.025"),))] == 0
    assert values[("callpush_push_latency_seconds_bucket", (("le", "0.05"),))] == 5


def test_build_info_names_the_version_once_per_scrape_however_many_processes(tmp_path):
    run_child(tmp_path, 1)
    run_child(tmp_path, 1)
    text = generate_latest(queue_metrics.build_registry(None, (), path=str(tmp_path))).decode()
    info = [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "callpush_build_info"
    ]
    python = ".".join(str(part) for part in sys.version_info[:3])
    assert info == [({"version": pyproject_version(), "python": python}, 1.0)]


def test_the_cli_does_not_import_prometheus_client_before_the_commands_set_it_up():
    """`callpush web`/`worker` turn on multiprocess mode by setting PROMETHEUS_MULTIPROC_DIR,
    which prometheus_client reads once, at import: nothing on the way to the command may
    import it first."""
    code = (
        "import json, sys, worker.cli;"
        "print(json.dumps(sorted(m for m in sys.modules if 'prometheus' in m)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(done.stdout) == []


def webhook_requests(outcome: str) -> float:
    return sample("callpush_webhook_request_seconds_count", outcome=outcome)


def test_each_webhook_request_is_timed_by_outcome(client):
    """callpush_webhook_request_seconds: one observation per answer of the receiver, labelled
    by what Stream makes of it (stored, rejected for good, or to be retried)."""
    ring = sample_events.ring_event("alice", ["bob"])
    body, headers = sample_events.signed_request(ring, api_key=API_KEY, secret=SECRET)
    other = {"type": "call.member_added", "call_cid": ring["call_cid"]}
    other_body, other_headers = sample_events.signed_request(other, api_key=API_KEY, secret=SECRET)
    big = dict(ring, padding="x" * 20_000)
    big_body, big_headers = sample_events.signed_request(big, api_key=API_KEY, secret=SECRET)
    outcomes = ("accepted", "duplicate", "ignored", "rejected", "unavailable", "error")
    before = {outcome: webhook_requests(outcome) for outcome in outcomes}
    slowest_before = sample("callpush_webhook_request_seconds_bucket", outcome="accepted", le="6.0")

    answers = [
        client.post("/webhooks/stream", data=body, headers=headers).status_code,
        client.post("/webhooks/stream", data=body, headers=headers).status_code,
        client.post("/webhooks/stream", data=other_body, headers=other_headers).status_code,
        client.post(
            "/webhooks/stream", data=body, headers=headers | {"X-Signature": "0" * 64}
        ).status_code,
        client.post("/webhooks/stream", data=big_body, headers=big_headers).status_code,
    ]
    assert answers == [202, 200, 200, 401, 413]
    after = {outcome: webhook_requests(outcome) for outcome in outcomes}
    assert {o: after[o] - before[o] for o in outcomes} == {
        "accepted": 1,
        "duplicate": 1,
        "ignored": 1,
        "rejected": 2,  # the 401 and the 413
        "unavailable": 0,
        "error": 0,
    }
    # Timed in seconds: a test client's answer is well within the 6 s bucket.
    assert (
        sample("callpush_webhook_request_seconds_bucket", outcome="accepted", le="6.0")
        == slowest_before + 1
    )
    assert sample("callpush_webhook_request_seconds_sum", outcome="accepted") > 0


def test_the_request_outcome_of_each_answer_is_one_of_a_few():
    answers = ["accepted", "duplicate", "ignored", "processed", "failed", "400", "401", "413"]
    assert [metrics.webhook_request_outcome(a) for a in [*answers, "503", "500"]] == [
        "accepted",
        "duplicate",
        "ignored",
        "processed",
        "failed",
        "rejected",
        "rejected",
        "rejected",
        "unavailable",
        "error",
    ]
    before = webhook_requests("error")
    metrics.record_webhook_request("something new", 0.01)  # never a new label value
    assert webhook_requests("error") == before + 1
    assert not sample("callpush_webhook_request_seconds_count", outcome="something new")


def test_ring_pushes_are_also_counted_on_their_own(db):
    """A ring's answers count in callpush_pushes_total and in the ring metrics the ring alerts
    watch; a fan-out's only in the former."""
    event_id, claims = claims_for_event(
        db, [(Platform.APNS, VOIP, PushKind.VOIP), (Platform.FCM, ANDROID, PushKind.DATA)]
    )
    ring_sent = sample(
        "callpush_ring_pushes_total", provider="apns", platform="apns", result="sent"
    )
    ring_failed = sample(
        "callpush_ring_pushes_total", provider="fcm", platform="fcm", result="failed"
    )
    ring_latency = sample("callpush_ring_push_latency_seconds_count")
    all_latency = sample("callpush_push_latency_seconds_count")
    outcomes = [PushOutcome.sent(), PushOutcome(PushResult.FAILED, reason="INVALID_ARGUMENT")]
    received_at = utcnow() - timedelta(milliseconds=50)

    record_push_outcomes(db, event_id, received_at, claims, outcomes, provider_of=str, ring=True)
    record_push_outcomes(db, event_id, received_at, claims, outcomes, provider_of=str)

    assert sample(
        "callpush_ring_pushes_total", provider="apns", platform="apns", result="sent"
    ) == (ring_sent + 1)
    assert sample(
        "callpush_ring_pushes_total", provider="fcm", platform="fcm", result="failed"
    ) == (ring_failed + 1)
    assert sample("callpush_ring_push_latency_seconds_count") == ring_latency + 2
    assert sample("callpush_push_latency_seconds_count") == all_latency + 4
    assert sample("callpush_ring_push_latency_seconds_bucket", le="0.025") <= sample(
        "callpush_ring_push_latency_seconds_bucket", le="0.05"
    )


def test_refused_credentials_are_counted_by_provider_and_reason():
    expired = PushOutcome(PushResult.FAILED, reason="ExpiredProviderToken", status_code=403)
    fcm_refused = PushOutcome(PushResult.FAILED, reason="UNAUTHENTICATED", status_code=401)
    # A token APNs calls invalid, or a payload it refuses, says nothing about our credentials.
    others = [
        PushOutcome(PushResult.TOKEN_INVALID, reason="BadDeviceToken", status_code=400),
        PushOutcome(PushResult.FAILED, reason="PayloadTooLarge", status_code=413),
    ]
    apns_before = sample(
        "callpush_push_auth_failures_total", provider="apns", reason="ExpiredProviderToken"
    )
    fcm_before = sample(
        "callpush_push_auth_failures_total", provider="fcm", reason="UNAUTHENTICATED"
    )
    total_before = sum(
        s.value
        for family in REGISTRY.collect()
        if family.name == "callpush_push_auth_failures"
        for s in family.samples
        if s.name.endswith("_total")
    )
    metrics.record_push_answers(
        [
            push_answer("apns", "apns", expired),
            push_answer("fcm", "fcm", fcm_refused),
            *[push_answer("apns", "apns", outcome) for outcome in others],
        ],
        utcnow(),
    )
    assert sample(
        "callpush_push_auth_failures_total", provider="apns", reason="ExpiredProviderToken"
    ) == (apns_before + 1)
    assert sample(
        "callpush_push_auth_failures_total", provider="fcm", reason="UNAUTHENTICATED"
    ) == (fcm_before + 1)
    total_after = sum(
        s.value
        for family in REGISTRY.collect()
        if family.name == "callpush_push_auth_failures"
        for s in family.samples
        if s.name.endswith("_total")
    )
    assert total_after == total_before + 2


@pytest.mark.services
def test_queue_depth_and_the_age_of_the_oldest_message_are_read_from_redis(redis_url):
    """Messages callpush queues carry the time they were queued; a scrape reads each queue's
    length and how long its next message has waited, and 0 for an empty queue."""
    import time

    import redis as redis_lib

    from worker.runtime.tasks import BULK_QUEUE, RING_QUEUE

    settings = load_settings(broker_url=redis_url)
    app = create_celery(settings, publisher=True)
    registry = queue_metrics.build_registry(redis_url, (RING_QUEUE, BULK_QUEUE), path=None)
    app.handoff.queue_event(1, "call.ring")
    time.sleep(0.5)
    app.handoff.queue_event(2, "call.ring")

    values = families(generate_latest(registry).decode())
    assert values[("callpush_queue_depth", (("queue", "ring"),))] == 2
    assert values[("callpush_queue_depth", (("queue", "bulk"),))] == 0
    waited = values[("callpush_queue_oldest_message_age_seconds", (("queue", "ring"),))]
    assert 0.5 <= waited < 30  # the first message's age, not the second's
    assert values[("callpush_queue_oldest_message_age_seconds", (("queue", "bulk"),))] == 0

    # A message published by something else (no stamp) has no age to report.
    client = redis_lib.Redis.from_url(redis_url)
    client.delete(RING_QUEUE)
    client.lpush(RING_QUEUE, json.dumps({"headers": {}, "body": ""}))
    values = families(generate_latest(registry).decode())
    assert values[("callpush_queue_depth", (("queue", "ring"),))] == 1
    assert ("callpush_queue_oldest_message_age_seconds", (("queue", "ring"),)) not in values
    client.close()


@pytest.mark.services
def test_a_retry_is_stamped_with_the_time_it_is_due(redis_url):
    """Celery copies a task's headers onto its retry; the retry's own stamp (tasks.py passes
    one) replaces the first attempt's, so a retry waiting out its countdown is not old."""
    import time

    import redis as redis_lib

    from worker.runtime import tasks
    from worker.runtime.tasks import BULK_QUEUE

    app = create_celery(load_settings(broker_url=redis_url), publisher=True)
    task = app.tasks[tasks.DELIVER_CHUNK]
    first_attempt = {queue_metrics.READY_AT_HEADER: time.time() - 600}
    task.push_request(
        id="chunk-task",
        called_directly=False,  # as in a worker: Celery retries only a task a worker runs
        args=[7, 0],
        kwargs={},
        retries=0,
        headers=first_attempt,
        delivery_info={"exchange": "", "routing_key": BULK_QUEUE},
    )
    try:
        task.retry(countdown=30, headers=queue_metrics.enqueue_headers(30), throw=False)
    finally:
        task.pop_request()
    client = redis_lib.Redis.from_url(redis_url)
    raw = client.lindex(BULK_QUEUE, -1)
    client.close()
    assert raw is not None
    headers = json.loads(raw)["headers"]
    assert headers["retries"] == 1
    assert headers[queue_metrics.READY_AT_HEADER] > time.time() + 25
    assert queue_metrics.queued_seconds(raw, time.time()) == 0  # not due yet: not waiting
    assert queue_metrics.queued_seconds(raw, time.time() + 40) >= 9


@pytest.mark.services
def test_queue_depth_is_read_from_rabbitmq_and_the_age_is_not(rabbitmq_url):
    """On RabbitMQ a scrape reads each queue's ready messages (a passive queue.declare);
    the oldest message's age would need the message taken off the queue, so it is left out.
    A queue no worker or publisher has declared yet holds nothing."""
    from worker.runtime.tasks import BULK_QUEUE, RING_QUEUE

    registry = queue_metrics.build_registry(rabbitmq_url, (RING_QUEUE, BULK_QUEUE), path=None)
    values = families(generate_latest(registry).decode())
    assert values[("callpush_queue_depth", (("queue", "ring"),))] == 0  # not declared yet

    app = create_celery(load_settings(broker_url=rabbitmq_url), publisher=True)
    for event_id in (1, 2):
        app.handoff.queue_event(event_id, "call.ring")
    app.handoff.queue_event(3, "call.missed")

    values = families(generate_latest(registry).decode())
    assert values[("callpush_queue_depth", (("queue", "ring"),))] == 2
    assert values[("callpush_queue_depth", (("queue", "bulk"),))] == 1
    assert not any(name == "callpush_queue_oldest_message_age_seconds" for name, _ in values)


def test_an_unreachable_rabbitmq_leaves_the_depth_out_of_the_scrape():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    registry = queue_metrics.build_registry(f"amqp://guest:guest@127.0.0.1:{port}//", ("ring",))
    text = generate_latest(registry).decode()
    assert "callpush_queue_depth" not in text
    assert "callpush_build_info" in text

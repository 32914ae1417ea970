"""Metrics, readiness and logs of the real production processes: `callpush web` (gunicorn, two
worker processes) and `callpush worker --metrics-port` (Celery prefork, two pool processes) on
real Redis and PostgreSQL, ringing the fake APNs and FCM, with the Stream secret and the database
password given as files, as Docker and Kubernetes secrets are."""

from __future__ import annotations

import json
import re

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from tests.e2e.processes import free_port, provider_env, run_cli, running, wait_until
from tests.e2e.test_ring_end_to_end import (
    ANDROID_TOKEN,
    API_KEY,
    SECRET,
    VOIP_TOKEN,
    post_ring,
    register_devices,
)
from tests.project_version import pyproject_version
from worker.stream import samples as sample_events

pytestmark = pytest.mark.timeout(180)
RINGS = 6
DATABASE_PASSWORD = "database-pa55word/from a file"


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    text = requests.get(url, timeout=5).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def build_info(samples: dict) -> list[str]:
    """The versions callpush_build_info names (its value is always 1)."""
    return [
        dict(labels)["version"]
        for (name, labels), sample in samples.items()
        if name == "callpush_build_info" and sample == 1
    ]


# Celery's signal handler prints this itself (celery.apps.worker), bypassing logging.
CELERY_SHUTDOWN_NOTICE = re.compile(r"worker: \w+ shutdown \(MainProcess\)")


def json_lines(path) -> list[dict]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    parsed = []
    for line in lines:
        if CELERY_SHUTDOWN_NOTICE.fullmatch(line):
            continue
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"{path.name}: not a JSON line: {line!r}")
    return parsed


@pytest.mark.services
def test_metrics_health_and_json_logs_of_the_production_processes(
    tmp_path, postgres_url, redis_url, fake_apns, apns_settings, fake_fcm, fcm_settings
):
    web_port, metrics_port = free_port(), free_port()
    web_metrics_dir = tmp_path / "web-metrics"
    web_metrics_dir.mkdir()
    (web_metrics_dir / "counter_999999.db").write_bytes(b"left by an earlier run")
    secrets = tmp_path / "run-secrets"
    secrets.mkdir()
    (secrets / "stream_api_secret").write_text(SECRET + "\n")
    env = provider_env(apns_settings, fcm_settings) | {
        "CALLPUSH_DATABASE_URL": postgres_url,
        "CALLPUSH_BROKER_URL": redis_url,
        "CALLPUSH_STREAM_API_KEY": API_KEY,
        "CALLPUSH_STREAM_API_SECRET_FILE": str(secrets / "stream_api_secret"),
    }
    if make_url(postgres_url).password is None:
        # The test server trusts local connections and ignores it; every process still has to
        # read the file and put the password into the URL it connects with.
        (secrets / "database_password").write_text(DATABASE_PASSWORD + "\n")
        env["CALLPUSH_DATABASE_PASSWORD_FILE"] = str(secrets / "database_password")
    run_cli(["db", "upgrade"], env, tmp_path)
    register_devices(env, tmp_path)
    web = ["web", "--bind", f"127.0.0.1:{web_port}", "--workers", "2"]
    worker = ["worker", "--concurrency", "2", "--metrics-port", str(metrics_port)]
    web_env = env | {"PROMETHEUS_MULTIPROC_DIR": str(web_metrics_dir)}
    with (
        running(web, web_env, tmp_path, "web", wait_port=web_port),
        running(worker, env, tmp_path, "worker", wait_port=metrics_port),
    ):
        base = f"http://127.0.0.1:{web_port}"
        assert requests.get(f"{base}/healthz", timeout=5).json() == {
            "status": "ok",
            "version": pyproject_version(),
        }
        ready = requests.get(f"{base}/readyz", timeout=5)
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}

        events = [sample_events.ring_event("alice", ["bob"]) for _ in range(RINGS)]
        for event in events:
            assert post_ring(web_port, event)[0].status_code == 202
        unsigned = requests.post(f"{base}/webhooks/stream", data=b"{}", timeout=5)
        assert unsigned.status_code == 401
        wait_until(
            lambda: fake_apns.count >= RINGS and len(fake_fcm.received) >= RINGS,
            60,
            message="every ring pushed",
        )

        # The web app sums its gunicorn workers' files, started afresh (the stale one is gone).
        assert not (web_metrics_dir / "counter_999999.db").exists()
        web_samples = scrape(f"{base}/metrics")
        assert (
            value(web_samples, "callpush_webhooks_total", type="call.ring", outcome="accepted")
            == RINGS
        )
        assert value(web_samples, "callpush_webhooks_total", type="unknown", outcome="401") == 1
        assert value(web_samples, "callpush_queue_depth", queue="ring") == 0
        assert build_info(web_samples) == [pyproject_version()]
        # Every answer timed, by outcome, summed over the gunicorn workers.
        timed = "callpush_webhook_request_seconds_count"
        assert value(web_samples, timed, outcome="accepted") == RINGS
        assert value(web_samples, timed, outcome="rejected") == 1
        assert value(web_samples, "callpush_queue_oldest_message_age_seconds", queue="ring") == 0

        # The worker's metrics port sums its pool processes' answers.
        def pushes_recorded() -> bool:
            samples = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
            return value(samples, "callpush_push_latency_seconds_count") >= 2 * RINGS

        wait_until(pushes_recorded, 30, message="push metrics of the pool processes")
        samples = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        for platform in ("apns", "fcm"):
            assert (
                value(
                    samples,
                    "callpush_pushes_total",
                    provider=platform,
                    platform=platform,
                    result="sent",
                )
                == RINGS
            )
        assert value(samples, "callpush_push_latency_seconds_count") == 2 * RINGS
        # The ring metrics the ring alerts watch count the same pushes.
        assert value(samples, "callpush_ring_push_latency_seconds_count") == 2 * RINGS
        for platform in ("apns", "fcm"):
            ring_sent = value(
                samples,
                "callpush_ring_pushes_total",
                provider=platform,
                platform=platform,
                result="sent",
            )
            assert ring_sent == RINGS
        assert value(samples, "callpush_push_latency_seconds_bucket", le="30.0") == 2 * RINGS
        assert ("callpush_queue_depth", frozenset({("queue", "bulk")})) in samples
        # One sample per scrape, however many pool processes wrote metric files.
        assert build_info(samples) == [pyproject_version()]

    web_log, worker_log = json_lines(tmp_path / "web.log"), json_lines(tmp_path / "worker.log")
    assert any(entry["logger"].startswith("gunicorn") for entry in web_log)
    event_lines = [entry for entry in worker_log if "event_id" in entry]
    assert event_lines, "no worker log line carried an event id"
    assert all(isinstance(entry["event_id"], int) for entry in event_lines)
    # The ring's lines, including the count of its answers, name the call as well.
    answered = [entry for entry in event_lines if entry["logger"] == "callpush.push"]
    assert len(answered) >= RINGS
    assert {entry.get("call_cid") for entry in answered} == {e["call_cid"] for e in events}
    everything = (tmp_path / "web.log").read_text() + (tmp_path / "worker.log").read_text()
    assert VOIP_TOKEN not in everything and ANDROID_TOKEN not in everything
    assert SECRET not in everything and DATABASE_PASSWORD not in everything

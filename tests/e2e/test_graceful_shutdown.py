"""A rolling restart under a steady stream of signed rings loses nothing that was accepted.

Two `callpush web` (gunicorn) and two `callpush worker` (Celery prefork) processes on real Redis
(and again on RabbitMQ) and PostgreSQL, as behind a load balancer.  Each is stopped the way an
orchestrator stops it (SIGTERM to the main process only) and started again, one at a time, while
rings keep coming. The sender behaves like Stream: a ring that gets no 2xx is sent again (same
X-Webhook-Id) to the other web process.  Every ring that got a 2xx must reach every device of its
callees (README:
at-least-once intake, one push per device).  One push is held by the fake APNs across a worker's
SIGTERM, to show that warm shutdown waits for in-flight pushes instead of abandoning them.

No `callpush beat`: the sweeper would hide a lost message by re-queueing it.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from sqlalchemy import text

from tests.e2e.processes import (
    base_env,
    callpush_command,
    free_port,
    provider_env,
    run_cli,
    stop,
    wait_for_port,
    wait_until,
)
from tests.fakes.pytest_plugin import apns_settings_for, fcm_settings_for
from worker.push.base import Platform
from worker.storage import devices
from worker.storage.database import Database
from worker.stream import samples as sample_events

pytestmark = pytest.mark.timeout(300)

API_KEY = "rolling-key"
SECRET = "rolling-secret-0123456789abcdef0123456789"
# The "slow" tokens make the fakes answer after SLOW seconds, so pushes are in flight when a
# worker gets SIGTERM; carol's answer at once.
SLOW = 0.2
DEVICES = {
    "bob": [(Platform.APNS, "slow" + "ab" * 30, True), (Platform.FCM, "slow-bob-android", False)],
    "carol": [(Platform.APNS, "cd" * 32, True), (Platform.FCM, "carol-android", False)],
    # Answered only when the test calls release(): a push deterministically in flight.
    "dave": [(Platform.APNS, "hold" + "ef" * 30, True)],
}
RING_INTERVAL = 0.12
GRACEFUL_EXIT_TIMEOUT = 40


class Service:
    """One `callpush` command that can be stopped gracefully and started again."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.name, self.args, self.env, self.cwd = name, args, env, cwd
        self.generation = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = cwd / f"{name}.log"

    def start(self, wait_port: int | None = None) -> None:
        self.generation += 1
        self.log_path = self.cwd / f"{self.name}-{self.generation}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [*callpush_command(), *self.args],
                env=base_env(self.env),
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: SIGTERM reaches the main process only
            )
        if wait_port is not None:
            wait_for_port(wait_port, self.process, self.log_path)
        else:  # a Celery worker: consuming once it logs "<node> ready."
            wait_until(lambda: " ready." in self.log_path.read_text(), 30, message=self.name)

    def sigterm(self) -> None:
        """What Docker, Kubernetes and systemd (KillMode=mixed) send: SIGTERM to the main
        process, which lets its own children finish."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGTERM)

    def wait_graceful_exit(self) -> int:
        assert self.process is not None
        try:
            return self.process.wait(GRACEFUL_EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} did not exit within {GRACEFUL_EXIT_TIMEOUT}s of SIGTERM")

    def restart(self, wait_port: int | None = None) -> None:
        self.sigterm()
        code = self.wait_graceful_exit()
        assert code == 0, f"{self.name} exited {code}:\n{self.log_path.read_text()[-3000:]}"
        self.start(wait_port)

    def kill(self) -> None:
        if self.process is not None:
            stop(self.process)


@dataclass
class Sender:
    """Posts rings like Stream: retried (same webhook id) until a 2xx, alternating web ports."""

    ports: list[int]
    accepted: list[dict] = field(default_factory=list)
    refused: list[dict] = field(default_factory=list)
    failovers: int = 0
    stopping: threading.Event = field(default_factory=threading.Event)

    def post(self, event: dict, first_port: int) -> bool:
        body, headers = sample_events.signed_request(event, api_key=API_KEY, secret=SECRET)
        ordered = self.ports[first_port:] + self.ports[:first_port]
        deadline = time.monotonic() + 30
        for attempt in itertools.count(1):
            port = ordered[(attempt - 1) % len(ordered)]
            headers["X-Webhook-Attempt"] = str(attempt)
            try:
                response = requests.post(
                    f"http://127.0.0.1:{port}/webhooks/stream",
                    data=body,
                    headers=headers,
                    timeout=10,
                )
                if 200 <= response.status_code < 300:
                    return True
            except requests.RequestException:
                pass
            self.failovers += 1
            if time.monotonic() > deadline:
                return False
            if attempt % len(ordered) == 0:
                time.sleep(0.1)
        return False  # pragma: no cover (itertools.count never ends)

    def post_and_record(self, event: dict, first_port: int = 0) -> None:
        (self.accepted if self.post(event, first_port) else self.refused).append(event)

    def stream(self) -> None:
        for n in itertools.count():
            if self.stopping.is_set():
                return
            self.post_and_record(sample_events.ring_event("alice", ["bob", "carol"]), n % 2)
            time.sleep(RING_INTERVAL)


def pushes_by_call(fake_apns, fake_fcm) -> Counter[tuple[str, str]]:
    """How many pushes each (call cid, device token) got."""
    seen: Counter[tuple[str, str]] = Counter()
    for request in list(fake_apns.received):
        seen[(request["payload"]["stream"]["call_cid"], request["token"])] += 1
    for request in list(fake_fcm.received):
        message = request["message"]
        seen[(message["data"]["call_cid"], message["token"])] += 1
    return seen


def expected_pushes(event: dict) -> set[tuple[str, str]]:
    callees = [member["user_id"] for member in event["members"]]
    return {(event["call_cid"], token) for user in callees for _, token, _ in DEVICES[user]}


@pytest.mark.services
def test_rolling_restart_delivers_every_accepted_ring(
    tmp_path,
    postgres_url,
    broker_url,
    push_credentials,
    fake_apns_factory,
    fake_fcm_factory,
):
    fake_apns = fake_apns_factory(slow_delay=SLOW)
    fake_fcm = fake_fcm_factory(slow_delay=SLOW)
    # A provider timeout well above the held push's few seconds.
    apns = apns_settings_for(fake_apns, push_credentials, timeout_seconds=45.0)
    fcm = fcm_settings_for(fake_fcm, push_credentials, tmp_path)
    env = provider_env(apns, fcm) | {
        "CALLPUSH_APNS__TIMEOUT_SECONDS": str(apns.timeout_seconds),  # not in provider_env
        "CALLPUSH_DATABASE_URL": postgres_url,
        "CALLPUSH_BROKER_URL": broker_url,
        "CALLPUSH_STREAM_API_KEY": API_KEY,
        "CALLPUSH_STREAM_API_SECRET": SECRET,
    }
    run_cli(["db", "upgrade"], env, tmp_path)
    db = Database(postgres_url)
    with db.transaction() as session:
        for user, tokens in DEVICES.items():
            for platform, token, voip in tokens:
                devices.add_device(
                    session,
                    api_key=API_KEY,
                    user_id=user,
                    platform=platform,
                    token=token,
                    voip=voip,
                )

    ports = [free_port(), free_port()]
    webs = []
    for name, port in zip(("web-a", "web-b"), ports, strict=True):
        runtime = tmp_path / f"{name}-run"  # gunicorn's control socket, one per server
        runtime.mkdir()
        args = ["web", "--bind", f"127.0.0.1:{port}", "--workers", "2"]
        webs.append(Service(name, args, env | {"XDG_RUNTIME_DIR": str(runtime)}, tmp_path))
    worker_args = ["worker", "--queues", "ring,bulk", "--concurrency", "2"]
    worker_1 = Service("worker-1", worker_args, env, tmp_path)
    worker_2 = Service("worker-2", worker_args, env, tmp_path)
    sender = Sender(ports)
    streaming = threading.Thread(target=sender.stream, name="stream-of-rings", daemon=True)

    with ExitStack() as cleanup:
        # Whatever fails, no process outlives the test (a stray worker would consume the next
        # test's messages from the same Redis database).
        cleanup.callback(db.dispose)
        for service in (*webs, worker_1, worker_2):
            cleanup.callback(service.kill)
        cleanup.callback(streaming.join, 60)
        cleanup.callback(sender.stopping.set)

        for web, port in zip(webs, ports, strict=True):
            web.start(wait_port=port)
        worker_1.start()
        streaming.start()
        time.sleep(1)

        # A push in flight in worker 1 (the only consumer yet) when it gets SIGTERM.
        held_ring = sample_events.ring_event("alice", ["dave"])
        sender.post_and_record(held_ring)
        wait_until(lambda: len(fake_apns.server.held) == 1, 15, message="the held push")
        worker_2.start()  # the replacement comes up first, as in a rolling update
        worker_1.sigterm()
        time.sleep(1.5)
        assert worker_1.process is not None and worker_1.process.poll() is None, (
            "worker 1 exited while a push was in flight"
        )
        assert fake_apns.release() == 1
        assert worker_1.wait_graceful_exit() == 0
        worker_1.start()

        # The rest of the rolling restart, one process at a time.
        webs[0].restart(wait_port=ports[0])
        time.sleep(1)
        worker_2.restart()
        time.sleep(1)
        webs[1].restart(wait_port=ports[1])
        time.sleep(1)
        sender.stopping.set()
        streaming.join(60)

        assert not sender.refused, f"{len(sender.refused)} rings never got a 2xx"
        assert len(sender.accepted) > 50
        assert sender.failovers > 0, "no request ever met a stopping web process"
        assert_every_accepted_ring_delivered(db, sender.accepted, fake_apns, fake_fcm)
        # Warm shutdown finished what it had started: nothing was sent twice, and the held
        # push was recorded once, as sent.
        twice = {key: n for key, n in pushes_by_call(fake_apns, fake_fcm).items() if n > 1}
        assert not twice, f"sent more than once: {twice}"
        with db.transaction() as session:
            held = session.execute(
                text(
                    "select d.status, d.attempts from deliveries d"
                    " join webhook_events e on e.id = d.event_id where e.call_cid = :cid"
                ),
                {"cid": held_ring["call_cid"]},
            ).all()
        assert [tuple(row) for row in held] == [("sent", 1)]
        assert_every_event_processed(db)


def assert_every_accepted_ring_delivered(db, accepted, fake_apns, fake_fcm) -> None:
    missing: set[tuple[str, str]] = set()

    def delivered() -> bool:
        seen = pushes_by_call(fake_apns, fake_fcm)
        missing.clear()
        for event in accepted:
            missing.update(p for p in expected_pushes(event) if seen[p] == 0)
        return not missing

    try:
        wait_until(delivered, 60, message="every accepted ring on every device")
    except AssertionError:
        calls = sorted({cid for cid, _ in missing})
        with db.transaction() as session:
            rows = session.execute(
                text(
                    "select e.id, e.status, e.status_reason, e.processing_attempts, d.status"
                    " from webhook_events e left join deliveries d on d.event_id = e.id"
                    " where e.call_cid = any(:calls)"
                ),
                {"calls": calls},
            ).all()
        pytest.fail(
            f"{len(missing)} pushes never arrived, e.g. {sorted(missing)[:4]};"
            f" their inbox rows and deliveries: {[tuple(r) for r in rows][:20]}"
        )


def assert_every_event_processed(db) -> None:
    """The task that sent a ring's last push still records the event's end: wait for it."""

    def unfinished() -> list[tuple]:
        with db.transaction() as session:
            rows = session.execute(
                text(
                    "select id, call_cid, status, status_reason, processing_attempts"
                    " from webhook_events where status != 'processed'"
                )
            ).all()
        return [tuple(row) for row in rows]

    try:
        wait_until(lambda: not unfinished(), 20, message="every event processed")
    except AssertionError:
        pytest.fail(f"events left unfinished: {unfinished()}")

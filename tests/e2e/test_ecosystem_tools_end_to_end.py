"""The ecosystem's own tools attach to callpush: ``celery -A worker.runtime.celery_entry`` (inspect,
report, events, call) against a real `callpush worker` on Redis and PostgreSQL, and
``flask --app webhook_app.flask_entry routes``.  Every command is a real subprocess with a
bound on its run time."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.e2e.processes import base_env, run_cli, running, stop, wait_until

pytestmark = pytest.mark.timeout(240)
API_KEY = "ecosystem-key"
SECRET = "ecosystem-secret-0123456789abcdef0123"
BIN = Path(sys.executable).parent


def tool(name: str, args: list[str], env: Mapping[str, str], cwd: Path, timeout: float = 60):
    return subprocess.run(
        [str(BIN / name), *args],
        env=base_env(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def celery(args: list[str], env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return tool("celery", ["-A", "worker.runtime.celery_entry", *args], env, cwd)


@pytest.mark.services
def test_celerys_own_tools_watch_the_workers(tmp_path, postgres_url, redis_url):
    env = {
        "CALLPUSH_DATABASE_URL": postgres_url,
        "CALLPUSH_BROKER_URL": redis_url,
        "CALLPUSH_STREAM_API_KEY": API_KEY,
        "CALLPUSH_STREAM_API_SECRET": SECRET,
        "CALLPUSH_CELERY__TASK_EVENTS": "true",
    }
    run_cli(["db", "upgrade"], env, tmp_path)
    worker = ["worker", "--queues", "ring,bulk", "--concurrency", "1"]
    with running(worker, env, tmp_path, "worker"):
        pings: list[subprocess.CompletedProcess] = []

        def answers_ping() -> bool:
            pings.append(celery(["inspect", "ping", "--timeout", "2"], env, tmp_path))
            return pings[-1].returncode == 0

        wait_until(answers_ping, 90, interval=1, message="celery inspect ping answered")
        assert "ring-bulk@" in pings[-1].stdout and "pong" in pings[-1].stdout

        # The app Celery's tools see is the workers' configuration, events on.
        report = celery(["report"], env, tmp_path)
        assert report.returncode == 0, report.stderr
        assert "worker_send_task_events: True" in report.stdout
        assert "task_send_sent_event: True" in report.stdout
        assert "'ring'" in report.stdout or "Queue ring" in report.stdout

        # `celery events` sees tasks run: send the sweeper task with `celery call` until the
        # event monitor (which only hears what is sent once it listens) has seen one succeed.
        dump_path = tmp_path / "events.log"
        with open(dump_path, "wb") as dump:
            monitor = subprocess.Popen(
                [str(BIN / "celery"), "-A", "worker.runtime.celery_entry", "events", "--dump"],
                env=base_env(env),
                cwd=tmp_path,
                stdout=dump,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                sent = celery(["call", "callpush.sweep_inbox"], env, tmp_path)
                assert sent.returncode == 0, sent.stderr
                text = dump_path.read_text(errors="replace")
                if "callpush.sweep_inbox" in text and "task succeeded" in text:
                    break
                time.sleep(2)
            text = dump_path.read_text(errors="replace")
        finally:
            stop(monitor)
        assert "task succeeded" in text, text[-2000:]
        assert "task received" in text and "callpush.sweep_inbox" in text, text[-2000:]
        assert "task sent" in text, text[-2000:]  # task_send_sent_event, from `celery call`


def test_flask_lists_the_routes_of_the_app_built_from_the_settings(tmp_path):
    env = {"CALLPUSH_DATABASE_URL": f"sqlite:///{tmp_path / 'callpush.db'}"}
    done = tool("flask", ["--app", "webhook_app.flask_entry", "routes"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    routes = {tuple(line.split()[1:3]) for line in done.stdout.splitlines()[2:] if line.strip()}
    assert ("POST", "/webhooks/stream") in routes
    assert ("GET", "/metrics") in routes


def test_the_entry_modules_read_the_settings_only_when_the_app_is_asked_for(tmp_path):
    """Importing either entry module reads no configuration (a missing config file does not
    matter); asking for the app reads it (and then says what is wrong)."""
    env = {"CALLPUSH_CONFIG": str(tmp_path / "missing.toml")}
    imported = tool(
        "python",
        ["-c", "import worker.runtime.celery_entry, webhook_app.flask_entry"],
        env,
        tmp_path,
    )
    assert imported.returncode == 0, imported.stderr
    asked = tool("python", ["-c", "import worker.runtime.celery_entry as e; e.app"], env, tmp_path)
    assert asked.returncode != 0
    assert "missing.toml: no such config file" in asked.stderr
    missing = tool(
        "python", ["-c", "import worker.runtime.celery_entry as e; e.worker"], env, tmp_path
    )
    assert "has no attribute 'worker'" in missing.stderr


def test_task_events_are_off_unless_asked_for(monkeypatch):
    from worker.foundation.settings import load_settings
    from worker.runtime.celery_app import create_celery

    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    monkeypatch.delenv("CALLPUSH_CELERY__TASK_EVENTS", raising=False)
    quiet = create_celery(load_settings()).conf
    assert (quiet.worker_send_task_events, quiet.task_send_sent_event) == (False, False)
    monkeypatch.setenv("CALLPUSH_CELERY__TASK_EVENTS", "true")
    watched = create_celery(load_settings()).conf
    assert (watched.worker_send_task_events, watched.task_send_sent_event) == (True, True)

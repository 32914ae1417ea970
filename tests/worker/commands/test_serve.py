"""`callpush worker` and `callpush beat` exit with Celery's status; `callpush web`'s gunicorn
bounds."""

from __future__ import annotations

import pytest
from celery import bootsteps

from worker.celery_app import create_celery
from worker.commands.serve import _gunicorn_timeouts, run_celery
from worker.settings import load_settings


class BrokenConsumerStart(bootsteps.StartStopStep):
    """Fails inside the running worker, as kombu's Redis transport can while it closes a lost
    connection (README: restarting)."""

    def start(self, parent: object) -> None:
        raise AttributeError("'NoneType' object has no attribute 'hostname'")


def test_a_worker_stopped_by_an_unrecoverable_error_exits_with_failure(tmp_path) -> None:
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'callpush.db'}")
    app = create_celery(settings)  # the embedded in-memory broker: no server needed
    app.steps["worker"].add(BrokenConsumerStart)
    argv = ["worker", "--pool", "solo", "--without-mingle", "--without-gossip"]
    with pytest.raises(SystemExit) as stopped:
        run_celery(app, [*argv, "--loglevel", "WARNING"])
    # Celery's own worker_main would have returned, and the process exited 0.
    assert stopped.value.code == 1


def test_gunicorn_timeouts_stay_above_the_longest_request_wait(monkeypatch) -> None:
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    assert _gunicorn_timeouts(load_settings()) == {"timeout": 30, "graceful_timeout": 20}
    slow = load_settings(database={"web_statement_timeout_seconds": 30})
    # max(pool 2, connect 2) + 30 + 1 s grace = 33 s a webhook may wait.
    assert _gunicorn_timeouts(slow) == {"timeout": 99, "graceful_timeout": 43}

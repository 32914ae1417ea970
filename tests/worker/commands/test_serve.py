"""`callpush worker` and `callpush beat` exit with Celery's status; `callpush web`'s gunicorn
bounds."""

from __future__ import annotations

import pytest
from celery import bootsteps

from worker.commands.serve import _gunicorn_timeouts, run_celery
from worker.foundation.settings import load_settings
from worker.runtime.celery_app import create_celery


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


# --- start-up refusals ------------------------------------------------------------------------


def _cli(*args: str, **env: str):
    import os

    from click.testing import CliRunner

    from worker.cli import main

    clean = {name: None for name in os.environ if name.upper().startswith("CALLPUSH_")}
    clean.update({f"CALLPUSH_{key.upper()}": value for key, value in env.items()})
    return CliRunner().invoke(main, list(args), env=clean)


@pytest.mark.parametrize(
    ("command", "env"),
    [
        (["web", "--bind", "127.0.0.1:1"], {"broker_url": "redis://127.0.0.1:1/0"}),
        (["run", "--port", "1"], {}),
    ],
)
def test_web_and_run_refuse_a_short_admin_token(tmp_path, command, env):
    short = "too-short-admin-token"
    result = _cli(
        *command,
        database_url=f"sqlite:///{tmp_path / 'callpush.db'}",
        stream_api_key="k",
        stream_api_secret="s" * 40,
        admin_token=short,
        **env,
    )
    assert result.exit_code == 1, result.output
    assert "refusing to start: admin_token (CALLPUSH_ADMIN_TOKEN) is 21 characters" in result.output
    assert short not in result.output


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.com"])
def test_run_with_the_public_dev_key_refuses_to_listen_beyond_loopback(tmp_path, host):
    result = _cli("run", "--host", host, database_url=f"sqlite:///{tmp_path / 'callpush.db'}")
    assert result.exit_code == 1, result.output
    assert f"--host {host}: `callpush run` accepts webhooks signed with the public" in result.output
    assert "listens on 127.0.0.1 only" in result.output
    assert not (tmp_path / "callpush.db").exists()  # refused before anything started


def test_loopback_hosts():
    from worker.commands.serve import _is_loopback

    assert all(_is_loopback(h) for h in ("127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost"))
    assert not any(_is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "", "example.com"))


# --- gunicorn's control socket ----------------------------------------------------------------


def test_web_instances_open_no_shared_gunicorn_control_socket(tmp_path, redis_url):
    """gunicorn 25.1+ opens a control socket at $XDG_RUNTIME_DIR/gunicorn.ctl (else
    ~/.gunicorn/gunicorn.ctl) unless told not to; two instances would share it."""
    import urllib.request

    from tests.e2e.processes import free_port, running
    from worker.storage.migrations import upgrade_to_head

    runtime, home = tmp_path / "run", tmp_path / "home"
    runtime.mkdir()
    home.mkdir()
    database_url = f"sqlite:///{tmp_path / 'callpush.db'}"
    upgrade_to_head(database_url)
    env = {
        "CALLPUSH_DATABASE_URL": database_url,
        "CALLPUSH_BROKER_URL": redis_url,
        "CALLPUSH_STREAM_API_KEY": "k",
        "CALLPUSH_STREAM_API_SECRET": "s" * 40,
        "XDG_RUNTIME_DIR": str(runtime),
        "HOME": str(home),
    }
    first, second = free_port(), free_port()
    web = ["web", "--workers", "1", "--threads", "2", "--bind"]
    with (
        running([*web, f"127.0.0.1:{first}"], env, tmp_path, "web-1", wait_port=first),
        running([*web, f"127.0.0.1:{second}"], env, tmp_path, "web-2", wait_port=second),
    ):
        for port in (first, second):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
                assert answer.status == 200
        assert list(runtime.iterdir()) == []
        assert not (home / ".gunicorn").exists()

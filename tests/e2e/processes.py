"""Start `callpush` commands as real processes, the way a deployment runs them, and prepare the
servers they use.

The end-to-end tests and the benchmarks (bench/) both run callpush this way, so both use these
helpers: a free port, waiting for a port or a condition, stopping a process group, the command and
environment of a callpush process, a fresh PostgreSQL database and an emptied Redis database."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from worker.foundation.settings import ApnsSettings, FcmSettings

# The repository: helper processes started elsewhere (bench's fakes, a test's own directory)
# import tests.* and bench.* from here.
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def callpush_command() -> list[str]:
    found = shutil.which("callpush", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "worker.cli"]


def provider_env(apns: ApnsSettings, fcm: FcmSettings | None) -> dict[str, str]:
    """The settings of the fakes as CALLPUSH_* variables, as an operator would set them (no
    ``fcm``: no FCM)."""
    env = {
        "CALLPUSH_APNS__KEY_FILE": str(apns.key_file),
        "CALLPUSH_APNS__KEY_ID": apns.key_id,
        "CALLPUSH_APNS__TEAM_ID": apns.team_id,
        "CALLPUSH_APNS__BUNDLE_ID": apns.bundle_id,
        "CALLPUSH_APNS__USE_SANDBOX": "true" if apns.use_sandbox else "false",
        "CALLPUSH_APNS__HOST": str(apns.host),
        "CALLPUSH_APNS__PORT": str(apns.port),
        "CALLPUSH_APNS__CA_FILE": str(apns.ca_file),
    }
    if fcm is not None:
        env["CALLPUSH_FCM__SERVICE_ACCOUNT_FILE"] = str(fcm.service_account_file)
        env["CALLPUSH_FCM__ENDPOINT"] = fcm.endpoint
    return env


def base_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without its CALLPUSH_* variables, plus ``extra``: a process
    sees only the configuration it is given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLPUSH_")}
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def run_cli(
    args: list[str], env: Mapping[str, str], cwd: Path, *, timeout: float = 60, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*callpush_command(), *args],
        env=base_env(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


@contextmanager
def running(
    args: list[str], env: Mapping[str, str], cwd: Path, log_name: str, wait_port: int | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    log_path = cwd / f"{log_name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*callpush_command(), *args],
            env=base_env(env),
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            if wait_port is not None:
                wait_for_port(wait_port, process, log_path)
            yield process
        finally:
            stop(process)


def stop(process: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    """Signal the process's group (it was started in a session of its own), SIGKILL it after
    ``timeout`` seconds."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)
    except ProcessLookupError:
        pass


def wait_for_port(
    port: int, process: subprocess.Popen[Any], log_path: Path, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"process exited ({process.returncode}):\n{log_path.read_text()[-3000:]}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(
        f"nothing listening on {port} after {timeout}s:\n{log_path.read_text()[-3000:]}"
    )


def poll_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    """Whether ``predicate`` became true within ``timeout`` seconds (checked every
    ``interval``): for a caller that goes on either way, as a benchmark recording it does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def wait_until(
    predicate: Callable[[], object], timeout: float = 20, interval: float = 0.05, message: str = ""
) -> None:
    """Return once ``predicate`` is true; AssertionError after ``timeout`` seconds."""
    if not poll_until(predicate, timeout, interval):
        raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}")


# --- PostgreSQL and Redis -----------------------------------------------------------------------


def create_database(admin_url: str, name: str) -> str:
    """Create the PostgreSQL database ``name`` through ``admin_url``, dropping any left by an
    earlier run; returns its SQLAlchemy URL."""
    from sqlalchemy import create_engine, make_url, text

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, name: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@contextmanager
def temporary_database(admin_url: str, name: str) -> Iterator[str]:
    """A fresh database ``name`` (its URL) for the block, dropped after it."""
    url = create_database(admin_url, name)
    try:
        yield url
    finally:
        drop_database(admin_url, name)


def flush_redis(url: str) -> None:
    """Empty the one Redis database ``url`` names."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()

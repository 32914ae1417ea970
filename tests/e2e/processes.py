"""Start `callpush` commands as real processes, the way a deployment runs them."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from worker.foundation.settings import ApnsSettings, FcmSettings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def callpush_command() -> list[str]:
    found = shutil.which("callpush", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "worker.cli"]


def provider_env(apns: ApnsSettings, fcm: FcmSettings) -> dict[str, str]:
    """The settings of the fakes as CALLPUSH_* variables, as an operator would set them."""
    env = {
        "CALLPUSH_APNS__KEY_FILE": str(apns.key_file),
        "CALLPUSH_APNS__KEY_ID": apns.key_id,
        "CALLPUSH_APNS__TEAM_ID": apns.team_id,
        "CALLPUSH_APNS__BUNDLE_ID": apns.bundle_id,
        "CALLPUSH_APNS__USE_SANDBOX": "true" if apns.use_sandbox else "false",
        "CALLPUSH_APNS__HOST": str(apns.host),
        "CALLPUSH_APNS__PORT": str(apns.port),
        "CALLPUSH_APNS__CA_FILE": str(apns.ca_file),
        "CALLPUSH_FCM__SERVICE_ACCOUNT_FILE": str(fcm.service_account_file),
        "CALLPUSH_FCM__ENDPOINT": fcm.endpoint,
    }
    return env


def base_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLPUSH_")}
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cli(args: list[str], env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*callpush_command(), *args],
        env=base_env(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
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


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20) -> None:
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
    port: int, process: subprocess.Popen[bytes], log_path: Path, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited ({process.returncode}):\n{log_path.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port} after {timeout}s:\n{log_path.read_text()}")


def wait_until(predicate, timeout: float = 20, interval: float = 0.05, message: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}")

"""The fakes of tests/fakes in a process of their own (bench/fakes_server.py), and the handle a
benchmark reads them through: the settings that point callpush at them, and the compact records
of what they received."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from bench.environment import API_KEY, PYTHON, ROOT, SECRET
from tests.e2e.processes import provider_env
from tests.fakes.pytest_plugin import APNS_BUNDLE_ID, APNS_KEY_ID, APNS_TEAM_ID
from worker.foundation.settings import ApnsSettings, FcmSettings


@dataclass
class Fakes:
    info: dict[str, Any]
    process: subprocess.Popen[str]
    apns_offset: int = 0
    fcm_offset: int = 0
    apns_records: list[list[Any]] = field(default_factory=list)
    fcm_records: list[list[Any]] = field(default_factory=list)

    @property
    def control(self) -> str:
        return f"http://127.0.0.1:{self.info['control_port']}"

    def stats(self) -> dict[str, Any]:
        return requests.get(f"{self.control}/stats", timeout=30).json()

    def fetch(self) -> None:
        """Append the records received since the last fetch."""
        got = requests.get(
            f"{self.control}/records",
            params={"apns": self.apns_offset, "fcm": self.fcm_offset},
            timeout=60,
        ).json()
        self.apns_records += got["apns"]
        self.fcm_records += got["fcm"]
        self.apns_offset += len(got["apns"])
        self.fcm_offset += len(got["fcm"])

    def set_members(self, cid: str, prefix: str, count: int) -> None:
        requests.post(
            f"{self.control}/members",
            json={"cid": cid, "prefix": prefix, "count": count},
            timeout=60,
        ).raise_for_status()

    def provider_env(self) -> dict[str, str]:
        info = self.info
        apns = ApnsSettings(
            key_file=info["key_file"],
            key_id=APNS_KEY_ID,
            team_id=APNS_TEAM_ID,
            bundle_id=APNS_BUNDLE_ID,
            use_sandbox=True,
            host="localhost",  # the name in the fake's certificate
            port=info["apns_port"],
            ca_file=info["ca_file"],
        )
        fcm = None
        if info.get("service_account_file"):
            fcm = FcmSettings(
                service_account_file=info["service_account_file"], endpoint=info["fcm_endpoint"]
            )
        env = provider_env(apns, fcm)
        if info.get("stream_url"):
            env["CALLPUSH_STREAM_BASE_URL"] = info["stream_url"]
        return env


@contextmanager
def running_fakes(
    directory: Path, *, fcm: bool = True, stream: bool = True, apns_options: Sequence[str] = ()
) -> Iterator[Fakes]:
    directory.mkdir(parents=True, exist_ok=True)
    args = [PYTHON, "-m", "bench.fakes_server", "--dir", str(directory)]
    args += ["--stream-key", API_KEY, "--stream-secret", SECRET]
    if not fcm:
        args.append("--no-fcm")
    if not stream:
        args.append("--no-stream")
    for option in apns_options:
        args += ["--apns-option", option]
    log_file = open(directory / "fakes.log", "w")  # noqa: SIM115
    process = subprocess.Popen(
        args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log_file,
        text=True,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"fakes did not start: {(directory / 'fakes.log').read_text()}")
        yield Fakes(json.loads(line), process)
    finally:
        # The fakes stop when their stdin closes; a hung one is killed.
        try:
            assert process.stdin is not None
            process.stdin.close()
            process.wait(10)
        except Exception:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        log_file.close()

"""callpush as a benchmark runs it: its processes (web, workers, beat) in one work directory and
one environment, restarted when they crash if asked, and stopped together."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bench.environment import API_KEY, REDIS_URL, SECRET
from bench.fakes_process import Fakes
from bench.measures import log
from tests.e2e.processes import (
    base_env,
    callpush_command,
    poll_until,
    run_cli,
    stop,
    wait_for_port,
)


class Stack:
    """callpush processes sharing one environment (fakes, database, broker).

    With ``restart_crashed``, a process that exits on its own is started again within 0.2 s, as
    the compose file's ``restart: unless-stopped`` does; ``restarts`` records each exit code."""

    def __init__(self, workdir: Path, env: dict[str, str], *, restart_crashed: bool = False):
        self.workdir = workdir
        self.env = env
        self.stack = ExitStack()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: dict[str, list[int]] = {}
        self._launch: dict[str, Any] = {}
        self._closing = threading.Event()
        self._watcher: threading.Thread | None = None
        if restart_crashed:
            self._watcher = threading.Thread(target=self._restart_crashed, daemon=True)
            self._watcher.start()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._closing.set()
        if self._watcher is not None:
            self._watcher.join(5)
        for process in reversed(list(self.processes.values())):
            stop(process)
        self.stack.close()

    def _restart_crashed(self) -> None:
        while not self._closing.wait(0.2):
            for name, process in list(self.processes.items()):
                if process.poll() is not None and not self._closing.is_set():
                    self.restarts.setdefault(name, []).append(process.returncode)
                    log(f"{name} exited ({process.returncode}): restarting it")
                    self.processes[name] = self._launch[name]()

    def cli(self, *args: str, timeout: float = 120) -> str:
        done = run_cli(list(args), self.env, self.workdir, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"callpush {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def start(
        self,
        name: str,
        args: Sequence[str],
        *,
        wait_port: int | None = None,
        command: Sequence[str] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        log_path = self.workdir / f"{name}.log"
        log_file = self.stack.enter_context(open(log_path, "ab"))  # noqa: SIM115

        def launch() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [*(command or callpush_command()), *args],
                env=base_env(self.env | (extra_env or {})),
                cwd=self.workdir,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        self._launch[name] = launch
        process = self.processes[name] = launch()
        if wait_port is not None:
            wait_for_port(wait_port, process, log_path)
        return process

    def web(self, port: int, workers: int = 2, threads: int = 8) -> subprocess.Popen[bytes]:
        args = ["web", "--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
        return self.start("web", [*args, "--threads", str(threads)], wait_port=port)

    def worker(
        self,
        queues: str,
        concurrency: int | None = None,
        name: str | None = None,
        nice: int = 0,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        args = ["worker", "--queues", queues]
        if concurrency:
            args += ["--concurrency", str(concurrency)]
        command = callpush_command()
        if nice:
            command = ["nice", "-n", str(nice), *command]
        name = name or f"worker-{queues.replace(',', '-')}"
        return self.start(name, args, command=command, extra_env=extra_env)

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        process = self.processes.pop(name)
        self._launch.pop(name, None)
        stop(process, sig)


def wait_worker_ready(workdir: Path, name: str, timeout: float = 60) -> None:
    """Celery logs "ready." once it consumes."""
    path = workdir / f"{name}.log"
    if not poll_until(lambda: path.exists() and b" ready." in path.read_bytes(), timeout, 0.1):
        raise TimeoutError(f"{name} not ready:\n{path.read_text()[-3000:]}")


def bench_env(fakes: Fakes, db_url: str, broker_url: str = REDIS_URL) -> dict[str, str]:
    return fakes.provider_env() | {
        "CALLPUSH_DATABASE_URL": db_url,
        "CALLPUSH_BROKER_URL": broker_url,
        "CALLPUSH_STREAM_API_KEY": API_KEY,
        "CALLPUSH_STREAM_API_SECRET": SECRET,
    }


@contextmanager
def workdir(name: str) -> Iterator[Path]:
    if os.environ.get("BENCH_KEEP"):  # keep the logs of the processes for a look afterwards
        path = Path(tempfile.mkdtemp(prefix=f"callpush-bench-{name}-"))
        log(f"{name}: work directory {path}")
        yield path
        return
    with tempfile.TemporaryDirectory(prefix=f"callpush-bench-{name}-") as tmp:
        yield Path(tmp)

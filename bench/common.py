"""Shared plumbing: machine facts, the fakes process, PostgreSQL/Redis, callpush processes,
RSS sampling, percentiles and result files."""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from worker.stream import samples as sample_events

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PYTHON = sys.executable
BIN = Path(PYTHON).parent
API_KEY = "bench-key"
# 32+ bytes: PyJWT warns about shorter HMAC keys (the fake Stream API signs with it too).
SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
PG_ADMIN_URL = os.environ.get(
    "CALLPUSH_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
# The test suite uses Redis databases 9..14 (tests/conftest.py): the benchmarks take 15.
REDIS_URL = os.environ.get("CALLPUSH_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
DB_NAME = os.environ.get("CALLPUSH_BENCH_DATABASE", "callpush_bench")


# --- facts and numbers --------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "loadavg_at_start": list(os.getloadavg()),
    }


def pct(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100), nearest-rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def metric(
    metric_name: str,
    value: float | None,
    unit: str,
    *,
    reference: float | None = None,
    reference_name: str = "",
    ratio: float | None = None,
    target: str = "",
    met: bool | None = None,
    note: str = "",
) -> dict[str, Any]:
    if ratio is None and reference and value is not None:
        ratio = value / reference
    return {
        "metric": metric_name,
        "value": None if value is None else round(value, 3),
        "unit": unit,
        "reference": None if reference is None else round(reference, 3),
        "reference_name": reference_name,
        "ratio": None if ratio is None else round(ratio, 3),
        "target": target,
        "met": met,
        "note": note,
    }


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return path


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Any, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


# --- the fakes ----------------------------------------------------------------------------------


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
        env = {
            "CALLPUSH_APNS__KEY_FILE": info["key_file"],
            "CALLPUSH_APNS__KEY_ID": "ABC123DEFG",
            "CALLPUSH_APNS__TEAM_ID": "TEAM123456",
            "CALLPUSH_APNS__BUNDLE_ID": "com.example.callpush",
            "CALLPUSH_APNS__USE_SANDBOX": "true",
            "CALLPUSH_APNS__HOST": "localhost",
            "CALLPUSH_APNS__PORT": str(info["apns_port"]),
            "CALLPUSH_APNS__CA_FILE": info["ca_file"],
        }
        if info.get("service_account_file"):
            env["CALLPUSH_FCM__SERVICE_ACCOUNT_FILE"] = info["service_account_file"]
            env["CALLPUSH_FCM__ENDPOINT"] = info["fcm_endpoint"]
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
        try:
            assert process.stdin is not None
            process.stdin.close()
            process.wait(10)
        except Exception:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        log_file.close()


# --- PostgreSQL and Redis -----------------------------------------------------------------------


def fresh_database(name: str = DB_NAME) -> str:
    """Drop and create ``name``; returns its SQLAlchemy URL."""
    from sqlalchemy import create_engine, make_url, text

    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def psycopg_dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def flush_redis(url: str = REDIS_URL) -> None:
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


def insert_devices(
    db_url: str, rows: Sequence[tuple[str, str, str, bool]], api_key: str = API_KEY
) -> None:
    """(user_id, platform, token, voip) rows of the app ``api_key`` straight into the devices
    table (COPY)."""
    import psycopg

    now = datetime.now(UTC)
    columns = "api_key, user_id, platform, token, voip, source, created_at, registered_at"
    with psycopg.connect(psycopg_dsn(db_url)) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY devices ({columns}) FROM STDIN") as copy:
            for user_id, plat, token, voip in rows:
                copy.write_row((api_key, user_id, plat, token, voip, "local", now, now))
        conn.commit()


def sql(db_url: str, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(psycopg_dsn(db_url)) as conn, conn.cursor() as cur:
        cur.execute(query, params)  # type: ignore[arg-type]
        return list(cur.fetchall()) if cur.description else []


def unfinished_events(db_url: str) -> int:
    """Inbox events not yet processed (received or processing): 0 once a run has drained."""
    query = "select count(*) from webhook_events where status in ('received', 'processing')"
    return int(sql(db_url, query)[0][0])


# --- callpush processes -------------------------------------------------------------------------


def callpush_command() -> list[str]:
    exe = BIN / "callpush"
    return [str(exe)] if exe.exists() else [PYTHON, "-m", "worker.cli"]


def base_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLPUSH_")}
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    # bench.* and tests.fakes are imported by helper processes started outside the repo root.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def stop_process(process: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 20):
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


def wait_for_port(port: int, process: subprocess.Popen[Any], log_path: Path, timeout=30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited ({process.returncode}):\n{log_path.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing on port {port}:\n{log_path.read_text()[-3000:]}")


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
            stop_process(process)
        self.stack.close()

    def _restart_crashed(self) -> None:
        while not self._closing.wait(0.2):
            for name, process in list(self.processes.items()):
                if process.poll() is not None and not self._closing.is_set():
                    self.restarts.setdefault(name, []).append(process.returncode)
                    log(f"{name} exited ({process.returncode}): restarting it")
                    self.processes[name] = self._launch[name]()

    def cli(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            [*callpush_command(), *args],
            env=base_env(self.env),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
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
        stop_process(process, sig)


def wait_worker_ready(workdir: Path, name: str, timeout: float = 60) -> None:
    """Celery logs "ready." once it consumes."""
    path = workdir / f"{name}.log"
    if not wait_until(lambda: path.exists() and b" ready." in path.read_bytes(), timeout, 0.1):
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


# --- memory -------------------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """pid and its descendants (from /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children.get(current, [])
    return tree


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds of these (live) processes."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def pids_named(name: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip().startswith(name):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


class CpuMeter:
    """CPU used per named process group between start() and stop(), in cores (CPU s / s)."""

    def __init__(self, groups: dict[str, Any]) -> None:
        # A group is a root pid (its tree is measured) or a callable returning pids.
        self.groups = groups
        self._start: dict[str, float] = {}
        self._t0 = 0.0
        self.cores: dict[str, float] = {}

    def _pids(self, spec: Any) -> list[int]:
        return spec() if callable(spec) else process_tree(spec)

    def start(self) -> CpuMeter:
        self._t0 = time.monotonic()
        self._start = {n: cpu_seconds(self._pids(s)) for n, s in self.groups.items()}
        return self

    def stop(self) -> dict[str, float]:
        elapsed = time.monotonic() - self._t0
        for name, spec in self.groups.items():
            used = cpu_seconds(self._pids(spec)) - self._start[name]
            self.cores[name] = round(used / elapsed, 2)
        return self.cores


class RssSampler:
    """Samples the RSS of process trees every ``interval`` seconds in a thread."""

    def __init__(self, roots: dict[str, int], interval: float = 0.25) -> None:
        self.roots = roots
        self.interval = interval
        self.samples: list[dict[str, Any]] = []  # {"t", name: {"total", "max"}}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            sample: dict[str, Any] = {"t": time.monotonic()}
            for name, root in self.roots.items():
                sizes = [rss_mb(p) for p in process_tree(root)]
                sample[name] = {"total": sum(sizes), "max": max(sizes, default=0.0)}
            self.samples.append(sample)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)

    def peak(self, name: str, key: str = "max") -> float:
        return max((s[name][key] for s in self.samples if name in s), default=0.0)


# --- requests -----------------------------------------------------------------------------------


def signed(event: dict[str, Any], webhook_id: str | None = None) -> dict[str, Any]:
    body, headers = sample_events.signed_request(
        event, api_key=API_KEY, secret=SECRET, webhook_id=webhook_id or str(uuid.uuid4())
    )
    return {"body": body.decode(), "headers": headers}


def notification_event(
    caller: str, members: Sequence[str], call_id: str | None = None
) -> dict[str, Any]:
    """A call.notification; ≥100 members make the worker page them from Stream's API."""
    event = sample_events.ring_event(caller, list(members), call_id=call_id)
    event["type"] = "call.notification"
    return event


def write_jsonl(path: Path, items: Sequence[dict[str, Any]]) -> Path:
    with open(path, "w") as out:
        for item in items:
            out.write(json.dumps(item) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path) as source:
        return [json.loads(line) for line in source if line.strip()]

"""What processes cost, read from /proc: a process tree, its RSS and CPU time, sampled while a
benchmark runs."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


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

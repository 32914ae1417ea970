"""py-spy on running processes: where the time goes, as text for the summary."""

from __future__ import annotations

import subprocess
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from bench.environment import BIN
from bench.process_stats import process_tree


class PySpy:
    """``py-spy record --format raw`` on every process of the trees under ``roots``."""

    def __init__(self, roots: list[int], seconds: float, out_dir: Path, rate: int = 50) -> None:
        self.pids = [p for root in roots for p in process_tree(root)]
        self.seconds = seconds
        self.out_dir = out_dir
        self.rate = rate
        self.files: list[Path] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> PySpy:
        exe = BIN / "py-spy"
        for pid in self.pids:
            path = self.out_dir / f"pyspy-{pid}.txt"
            self.files.append(path)
            args = [str(exe), "record", "-r", str(self.rate), "-d", str(int(self.seconds))]
            args += ["-f", "raw", "-o", str(path), "--pid", str(pid), "--nonblocking"]
            thread = threading.Thread(
                target=subprocess.run,
                args=(args,),
                kwargs={"capture_output": True, "timeout": self.seconds + 60},
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        return self

    def join(self) -> dict[str, Any]:
        for thread in self._threads:
            thread.join(self.seconds + 90)
        return summarize(self.files)


def _frame_name(frame: str) -> str:
    # "function (path/to/file.py:123)" -> "function (file.py)"
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rsplit("/", 1)[-1]
    return f"{name} ({file})" if file else name


PRODUCT_DIRS = ("(worker/", "(webhook_app/", "/main/worker/", "/main/webhook_app/")


def summarize(files: list[Path], top: int = 12) -> dict[str, Any]:
    """Self time and inclusive time per function over all samples (idle threads excluded);
    ``product_pct``: inclusive time of callpush's own functions (worker/, webhook_app/)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    product: Counter[str] = Counter()
    total = 0
    idle_markers = ("wait (threading.py)", "select (selectors.py)", "poll (selectors.py)")
    for path in files:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            raw = [f for f in stack.split(";") if f and "process " not in f]
            for frame in {
                _frame_name(f)
                for f in raw
                if any(d in f for d in PRODUCT_DIRS) and "site-packages" not in f
            }:
                product[frame] += count
            frames = [_frame_name(f) for f in raw]
            frames = [f for f in frames if not f.startswith("thread ")]
            if not frames or any(m in frames[-1] for m in idle_markers):
                continue
            total += count
            own[frames[-1]] += count
            for frame in set(frames):
                inclusive[frame] += count
    if not total:
        return {"samples": 0}

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)]

    return {
        "samples": total,
        "self_pct": share(own),
        "inclusive_pct": [
            (name, round(100 * n / total, 1)) for name, n in inclusive.most_common(6 * top)
        ],
        "product_pct": [
            (name, round(100 * n / total, 1)) for name, n in product.most_common(2 * top)
        ],
    }


def describe(profile: dict[str, Any], inclusive_filter: tuple[str, ...] = ()) -> str:
    """One line: top self-time functions, and chosen inclusive ones."""
    if not profile.get("samples"):
        return "no py-spy samples"
    selfs = ", ".join(f"{n} {p}%" for n, p in profile["self_pct"][:6])
    text = f"py-spy ({profile['samples']} busy samples) self time: {selfs}"
    product = profile.get("product_pct") or []
    if product:
        text += "; inclusive, callpush functions: " + ", ".join(
            f"{n} {p}%" for n, p in product[:10]
        )
    if inclusive_filter:
        chosen = [
            f"{n} {p}%"
            for n, p in profile["inclusive_pct"]
            if any(key in n for key in inclusive_filter)
        ]
        if chosen:
            text += "; inclusive, libraries: " + ", ".join(chosen[:8])
    return text

"""A progress line on stderr for long commands: done/total, percent, rate and ETA, redrawn in
place at most a few times a second.  Shown when stderr is a terminal, or when asked for
(``--progress``, e.g. under `script` or in a CI log): stdout stays the command's result."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TextIO

from worker.foundation.durations import format_duration

REDRAW_SECONDS = 0.2


def progress_wanted(option: bool | None, stream: TextIO | None = None) -> bool:
    """``--progress``/``--no-progress`` when given, else whether stderr is a terminal."""
    if option is not None:
        return option
    stream = stream or sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class ProgressLine:
    """``importing  12,000/20,000 lines  60%  1,480/s  ETA 5 seconds`` on one line."""

    def __init__(
        self,
        label: str,
        total: int | None,
        unit: str,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream or sys.stderr
        self.clock = clock
        self.done = 0
        self.started = clock()
        self.drawn_at: float | None = None
        self.width = 0
        self.finished = False
        # On a terminal the line is redrawn in place; elsewhere (a log) a line now and then.
        self.in_place = progress_wanted(None, self.stream)
        self.interval = REDRAW_SECONDS if self.in_place else 5.0

    def update(self, n: int) -> None:
        self.done += n
        now = self.clock()
        if self.drawn_at is None or now - self.drawn_at >= self.interval:
            self._draw(now)

    def finish(self) -> None:
        self.finished = True
        self._draw(self.clock())
        if self.in_place:
            self.stream.write("\n")
            self.stream.flush()

    def text(self, now: float) -> str:
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        parts = [self.label]
        if self.total:
            parts.append(f"{self.done:,}/{self.total:,} {self.unit}")
            parts.append(f"{min(100, 100 * self.done // self.total)}%")
        else:
            parts.append(f"{self.done:,} {self.unit}")
        if rate > 0:
            parts.append(f"{rate:,.0f}/s")
        if self.total and self.done < self.total and rate > 0:
            left = timedelta(seconds=(self.total - self.done) / rate)
            parts.append(f"ETA {format_duration(left)}")
        elif self.total and self.done >= self.total:
            parts.append(f"in {format_duration(timedelta(seconds=elapsed))}")
        return "  ".join(parts)

    def _draw(self, now: float) -> None:
        self.drawn_at = now
        line = self.text(now)
        if self.in_place:
            self.stream.write("\r" + line.ljust(self.width))
            self.width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

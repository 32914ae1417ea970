"""The progress line of long commands (worker/commands/progress.py), on a clock we drive."""

from __future__ import annotations

import io

from worker.commands.progress import ProgressLine, progress_wanted


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_and_eta_from_what_was_done_so_far():
    clock = Clock()
    out = io.StringIO()
    line = ProgressLine("importing", 20_000, "lines", stream=out, clock=clock)
    clock.now += 10
    line.update(5_000)
    assert line.text(clock.now) == "importing  5,000/20,000 lines  25%  500/s  ETA 30 seconds"
    clock.now += 30
    line.update(15_000)
    line.finish()
    assert out.getvalue().splitlines()[-1] == (
        "importing  20,000/20,000 lines  100%  500/s  in 40 seconds"
    )


def test_without_a_total_it_counts():
    clock = Clock()
    line = ProgressLine("queuing", None, "events", stream=io.StringIO(), clock=clock)
    clock.now += 2
    line.update(10)
    assert line.text(clock.now) == "queuing  10 events  5/s"


def test_not_a_terminal_draws_a_line_now_and_then_not_every_update():
    clock = Clock()
    out = io.StringIO()  # not a terminal
    line = ProgressLine("importing", 1000, "lines", stream=out, clock=clock)
    for _ in range(100):
        clock.now += 0.01
        line.update(10)
    assert len(out.getvalue().splitlines()) == 1 and "\r" not in out.getvalue()


def test_shown_on_a_terminal_unless_told():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert progress_wanted(None, Terminal()) is True
    assert progress_wanted(None, io.StringIO()) is False
    assert progress_wanted(False, Terminal()) is False
    assert progress_wanted(True, io.StringIO()) is True

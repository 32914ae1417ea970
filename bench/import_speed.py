"""How long `callpush events import` takes: N fresh lines, then the same file again (all
duplicates), into PostgreSQL and into a SQLite file.

    python -m bench.import_speed [--lines 20000] [--profile] [--only postgresql|sqlite]

Drives worker.intake.file_import.import_lines (what the command runs) with a dispatcher that only
counts: the storing and the dedupe are measured, not the broker.  --profile prints the top of
a cProfile of each run.  Needs PostgreSQL on 127.0.0.1 (CALLPUSH_BENCH_POSTGRES_URL); drops and
creates the database callpush_bench_import.  Never run by pytest.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.environment import API_KEY, PG_ADMIN_URL
from tests.e2e.processes import create_database, drop_database
from worker.intake.file_import import import_lines, max_line_bytes, read_lines
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head
from worker.stream import samples as sample_events

MAX_BODY_BYTES = 64 * 1024
DB_NAME = "callpush_bench_import"


class CountingHandoff:
    """Takes the imported events and does nothing with them: the bench measures the import."""

    def __init__(self) -> None:
        self.events: list[int] = []

    def queue_event(self, event_id: int, event_type: str) -> None:
        self.events.append(event_id)

    def queue_chunk(self, event_id: int, chunk_index: int) -> None:
        raise AssertionError("an import queues events, never chunks")

    def queue_replay(self, event_id: int) -> None:
        raise AssertionError("an import queues events, never replays")


def write_lines(path: Path, count: int) -> None:
    """Calls of four events each (ring, accepted, ended, missed), as a dead-letter export."""
    with path.open("w") as out:
        for n in range(count):
            cid = f"default:bench-{n // 4}"
            kind = n % 4
            if kind == 0:
                event = sample_events.ring_event("alice", ["bob"], call_id=cid.split(":")[1])
                event["created_at"] = 1_700_000_000_000_000_000 + n
            else:
                event_type = ("call.accepted", "call.ended", "call.missed")[kind - 1]
                event = sample_events.call_event(event_type, cid, "bob")
                event["created_at"] = 1_700_000_000_000_000_000 + n
            out.write(json.dumps(event) + "\n")


def timed_import(url: str, path: Path, profile: bool) -> tuple[float, str]:
    db = Database(url)
    handoff = CountingHandoff()
    profiler = cProfile.Profile() if profile else None
    try:
        with path.open("rb") as stream:
            started = time.perf_counter()
            if profiler:
                profiler.enable()
            report = import_lines(
                db,
                read_lines(stream, max_line_bytes(MAX_BODY_BYTES)),
                API_KEY,
                handoff,
                max_bytes=MAX_BODY_BYTES,
            )
            if profiler:
                profiler.disable()
            elapsed = time.perf_counter() - started
    finally:
        db.dispose()
    summary = (
        f"imported {report.imported}, duplicates {report.duplicates}, invalid {report.invalid}, "
        f"dispatched {len(handoff.events)}"
    )
    if profiler:
        text_out = io.StringIO()
        pstats.Stats(profiler, stream=text_out).sort_stats(
            os.environ.get("BENCH_SORT", "cumulative")
        ).print_stats(18)
        print(text_out.getvalue())
    return elapsed, summary


def postgres_database() -> tuple[str, Callable[[], None]]:
    return create_database(PG_ADMIN_URL, DB_NAME), lambda: drop_database(PG_ADMIN_URL, DB_NAME)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--only", choices=["postgresql", "sqlite"], default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        lines = Path(work) / "events.jsonl"
        write_lines(lines, args.lines)
        for backend in ("postgresql", "sqlite"):
            if args.only not in (None, backend):
                continue
            if backend == "postgresql":
                url, cleanup = postgres_database()
            else:
                url, cleanup = f"sqlite:///{work}/bench.db", lambda: None
            try:
                upgrade_to_head(url, API_KEY)
                for run in ("fresh", "again (all duplicates)"):
                    elapsed, summary = timed_import(url, lines, args.profile)
                    rate = args.lines / elapsed
                    print(
                        f"{backend:<10} {args.lines} lines, {run:<22} {elapsed:7.2f} s "
                        f"({rate:,.0f} lines/s): {summary}",
                        flush=True,
                    )
            finally:
                cleanup()


if __name__ == "__main__":
    main()

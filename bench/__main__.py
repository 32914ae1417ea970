"""Run the benchmarks.

    python -m bench all [--quick]          every benchmark, then bench/results/SUMMARY.md
    python -m bench NAME [--quick]         one of: ingest ring fanout soak chaos fuzz
    python -m bench summary                rebuild SUMMARY.md from bench/results/*.json

Each writes bench/results/NAME.json.  --quick is a smoke run of seconds (for CI).
Needs PostgreSQL and Redis on 127.0.0.1 (CALLPUSH_BENCH_POSTGRES_URL, CALLPUSH_BENCH_REDIS_URL)
and wrk (apt-get install -y wrk).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from typing import Any

from bench.measures import log, machine_info, write_result
from bench.summary import write_summary

BENCHMARKS = ["ingest", "ring", "fanout", "soak", "chaos", "fuzz"]


def run_one(name: str, quick: bool) -> dict[str, Any]:
    module = importlib.import_module(f"bench.{name}")
    machine = machine_info()
    started = time.monotonic()
    log(f"{name}: start{' (quick)' if quick else ''}")
    try:
        result = module.run(quick)
        result.setdefault("error", None)
    except Exception as error:
        traceback.print_exc()
        result = {"metrics": [], "details": {}, "error": f"{type(error).__name__}: {error}"}
    machine["loadavg_at_end"] = list(__import__("os").getloadavg())
    result = {
        "name": name,
        "quick": quick,
        "machine": machine,
        "duration_s": round(time.monotonic() - started, 1),
        **result,
    }
    write_result(name, result)
    log(f"{name}: done in {result['duration_s']} s")
    for row in result["metrics"]:
        log(
            f"  {row['metric']}: {row['value']} {row['unit']}"
            f" (ref {row['reference']}, ratio {row['ratio']}, target {row['target']!r},"
            f" met {row['met']})"
        )
    if result.get("error"):
        log(f"  ERROR {result['error']}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("name", choices=["all", "summary", *BENCHMARKS])
    parser.add_argument("--quick", action="store_true", help="a smoke run of seconds")
    args = parser.parse_args(argv)
    names = BENCHMARKS if args.name == "all" else [] if args.name == "summary" else [args.name]
    failed = False
    for name in names:
        failed |= bool(run_one(name, args.quick).get("error"))
    path = write_summary()
    log(f"summary: {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

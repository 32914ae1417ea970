"""Bad input: the hypothesis fuzz tests of tests/fuzz with the ``bench`` profile (thousands of
cases per test, >= 10,000 in all; --quick: 100 per test), through pytest; records the cases
run per test, the outcome and the known product bugs the xfail tests pin down."""

from __future__ import annotations

import json
import os
import re
import subprocess
from typing import Any

from bench.environment import PYTHON, ROOT
from bench.measures import metric
from bench.stack import workdir


def run(quick: bool) -> dict[str, Any]:
    with workdir("fuzz") as work:
        counts_path = work / "counts.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLPUSH_")}
        env |= {
            "HYPOTHESIS_PROFILE": "bench",
            "FUZZ_EXAMPLES": "100" if quick else "1100",
            "FUZZ_COUNTS": str(counts_path),
        }
        done = subprocess.run(
            [PYTHON, "-m", "pytest", "tests/fuzz", "-q", "-rxX", "-p", "no:cacheprovider"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        counts = json.loads(counts_path.read_text()) if counts_path.exists() else {}
    tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-500:]
    # The strict xfail tests each pin one known product bug (their reason says which).
    bugs = sorted(
        {
            line.split(" - ", 1)[-1]
            for line in done.stdout.splitlines()
            if line.startswith("XFAIL") and " - " in line
        }
    )
    failed = int(m.group(1)) if (m := re.search(r"(\d+) failed", tail)) else 0
    total = counts.get("total", 0)
    details = {"pytest": tail, "cases": counts.get("cases", {}), "returncode": done.returncode}
    if done.returncode != 0:
        details["output"] = done.stdout[-6000:]
    metrics = [
        metric(
            "fuzz cases run",
            total,
            "cases",
            target=">= 10,000 (full run)",
            met=total >= 10_000 if not quick else None,
        ),
        metric(
            "properties violated (5xx, crash, stored/enqueued without signature)",
            failed,
            "tests",
            target="0",
            met=failed == 0 and done.returncode == 0,
            note=tail,
        ),
        metric(
            "known product bugs pinned by strict xfail tests",
            len(bugs),
            "bugs",
            note="; ".join(bugs),
        ),
    ]
    findings = [f"bad input, product bug (strict xfail in tests/fuzz): {b}" for b in bugs]
    return {"metrics": metrics, "details": details, "findings": findings}

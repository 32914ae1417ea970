"""Hypothesis profiles for the fuzz tests, chosen with HYPOTHESIS_PROFILE:

  ci     (default) a few dozen examples per test: the whole directory in well under a minute;
  bench  thousands per test: `python -m bench fuzz` (>= 10,000 cases in all).

With FUZZ_COUNTS=<path> the number of examples each test ran is written there as JSON.
"""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, settings

from tests.fuzz._counts import CASES

settings.register_profile(
    "ci",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
settings.register_profile(
    "bench",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "1500")),
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get("FUZZ_COUNTS")
    if path:
        with open(path, "w") as out:
            json.dump({"cases": dict(CASES), "total": sum(CASES.values())}, out, indent=2)

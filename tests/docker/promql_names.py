"""What the alert rules and the dashboard may refer to: the series names callpush's code exposes
(read from its registry, not listed by hand), and the names a PromQL text refers to."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from worker.runtime import queue_metrics
from worker.runtime.tasks import BULK_QUEUE, RING_QUEUE

# A metric name of ours; rule and dashboard names are CamelCase or contain ":", never this.
METRIC_NAME = re.compile(r"\bcallpush_[a-z0-9_]+\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exposed_series_names(broker_url: str) -> set[str]:
    """Every series name a scrape of callpush can show: the metrics defined in
    worker/foundation/metrics.py and the queue gauges collected from the broker (Redis at
    ``broker_url``, which holds no message: the gauges are still listed)."""
    registry = queue_metrics.build_registry(broker_url, (RING_QUEUE, BULK_QUEUE), path="")
    names = set()
    for family in registry.collect():
        for suffix in SUFFIXES[family.type]:
            names.add(family.name + suffix)
    return names


def referenced_names(text: str) -> set[str]:
    return set(METRIC_NAME.findall(text))


def promtool() -> str | None:
    """The promtool binary (Debian package ``prometheus``; `.ci/run` installs it).  Missing:
    the test fails under CI=true, else skips saying so."""
    found = shutil.which("promtool")
    if found:
        return found
    message = "promtool is not installed (apt-get install prometheus; .ci/run installs it)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
    return None


DOCKER = Path(__file__).resolve().parents[2] / "docker"

"""worker.foundation.version: the installed package's metadata carries pyproject.toml's version."""

from __future__ import annotations

import sys

from tests.project_version import pyproject_version
from worker.foundation.version import callpush_version, python_version


def test_the_version_is_pyproject_s() -> None:
    # A mismatch means the installed metadata is stale: reinstall (pip install -e .).
    assert callpush_version() == pyproject_version()


def test_the_python_version_is_the_interpreter_s() -> None:
    assert python_version() == ".".join(str(part) for part in sys.version_info[:3])

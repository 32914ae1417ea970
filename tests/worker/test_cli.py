"""`callpush --version`: the installed command prints the package's version."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.project_version import pyproject_version


def test_version_prints_the_package_version() -> None:
    # The console script pip installed next to this interpreter, as an operator runs it.
    command = Path(sys.executable).parent / "callpush"
    done = subprocess.run(
        [str(command), "--version"], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout == f"callpush {pyproject_version()}\n"

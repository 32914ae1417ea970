"""The version pyproject.toml declares: what the installed package's metadata, and so
`callpush --version`, /healthz, /openapi.json and callpush_build_info, must report."""

from __future__ import annotations

import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def pyproject_version() -> str:
    version: str = tomllib.loads(PYPROJECT.read_text())["project"]["version"]
    return version

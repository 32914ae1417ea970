"""callpush's version: the installed package's (pyproject.toml's ``version``), read from its
metadata when asked, never at import.  `callpush --version`, ``/healthz``, ``/openapi.json`` and
the ``callpush_build_info`` metric all report it, so an operator can tell which version each
process of a rolling deploy runs."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "callpush"
# A source tree imported without being installed (pip install -e . installs it) has no metadata.
UNKNOWN = "unknown"


def callpush_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return UNKNOWN


def python_version() -> str:
    """The interpreter's version, e.g. "3.11.7"."""
    return platform.python_version()

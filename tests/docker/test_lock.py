"""requirements/*.txt: the hashed lock files the image is built from (`make lock` refreshes
them).  Checked by name, not version: a dependency added to pyproject.toml without refreshing
the lock fails here, before a build would."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _locked(path: Path) -> dict[str, list[str]]:
    """Package name -> the --hash values of its entry."""
    entries: dict[str, list[str]] = {}
    current = None
    for line in path.read_text().splitlines():
        pin = re.match(r"^([A-Za-z0-9._-]+)==(\S+)", line)
        if pin:
            current = canonicalize_name(pin.group(1))
            entries[current] = []
        elif current is not None:
            entries[current] += re.findall(r"--hash=(sha256:[0-9a-f]{64})", line)
    return entries


def _names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(text).name) for text in requirements}


def test_runtime_lock_covers_every_runtime_dependency() -> None:
    locked = _locked(ROOT / "requirements" / "runtime.txt")
    missing = _names(PYPROJECT["dependencies"]) - set(locked)
    assert not missing, f"not in requirements/runtime.txt (run `make lock`): {sorted(missing)}"
    # Extras pull in packages of their own (celery[redis] -> redis, psycopg[binary]).
    assert {"redis", "psycopg-binary", "cryptography"} <= set(locked)


def test_test_lock_covers_runtime_and_test_dependencies() -> None:
    locked = _locked(ROOT / "requirements" / "test.txt")
    wanted = _names(PYPROJECT["dependencies"]) | _names(PYPROJECT["optional-dependencies"]["test"])
    missing = wanted - set(locked)
    assert not missing, f"not in requirements/test.txt (run `make lock`): {sorted(missing)}"


def test_every_locked_package_is_pinned_with_hashes() -> None:
    for name in ("runtime.txt", "test.txt"):
        for package, hashes in _locked(ROOT / "requirements" / name).items():
            assert hashes, f"{name}: {package} has no --hash"


def test_the_image_installs_from_the_lock() -> None:
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(
        r"--require-hashes\s+\\?\s*--requirement\s+\S*requirements/runtime\.txt", dockerfile
    )
    # callpush itself goes in after the lock, without pulling dependencies around it.
    assert re.search(r"pip install [^\n]*--no-deps [^\n]*callpush-\*\.whl", dockerfile)
    assert re.search(r"pip wheel [^\n]*--no-deps \.", dockerfile)
    assert "!requirements/runtime.txt" in (ROOT / "docker" / "Dockerfile.dockerignore").read_text()

"""CHANGELOG.md keeps the Keep a Changelog shape and has a section for the version pyproject.toml
declares (a version bumped without its changelog entry fails here); LICENSE is the whole Apache
License 2.0 that pyproject.toml names."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from tests.project_version import pyproject_version

ROOT = Path(__file__).resolve().parents[2]
# The change types of https://keepachangelog.com/en/1.1.0/
CHANGE_TYPES = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def _versions(text: str) -> list[str]:
    return re.findall(r"^## \[([^\]]+)\]", text, flags=re.MULTILINE)


def test_the_changelog_starts_with_unreleased_then_the_current_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    versions = _versions(text)
    assert versions[:2] == ["Unreleased", pyproject_version()], versions
    dated = re.search(
        rf"^## \[{re.escape(pyproject_version())}\] - (\d{{4}}-\d{{2}}-\d{{2}})$",
        text,
        flags=re.MULTILINE,
    )
    assert dated, "the current version's heading needs its date: ## [x.y.z] - YYYY-MM-DD"


def test_the_changelog_uses_only_keep_a_changelog_change_types() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    used = set(re.findall(r"^### (.+)$", text, flags=re.MULTILINE))
    assert used and used <= CHANGE_TYPES, used - CHANGE_TYPES


def test_the_license_is_the_whole_apache_license_2_0() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    assert declared == {"text": "Apache-2.0"}
    text = (ROOT / "LICENSE").read_text()
    words = " ".join(text.split())
    assert words.startswith(
        "Apache License Version 2.0, January 2004 http://www.apache.org/licenses/ "
        "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION"
    )
    sections = re.findall(r"^\s+(\d)\. ([A-Z][A-Za-z ]+)\.", text, flags=re.MULTILINE)
    assert [title for _, title in sections] == [
        "Definitions",
        "Grant of Copyright License",
        "Grant of Patent License",
        "Redistribution",
        "Submission of Contributions",
        "Trademarks",
        "Disclaimer of Warranty",
        "Limitation of Liability",
        "Accepting Warranty or Additional Liability",
    ]
    assert "END OF TERMS AND CONDITIONS" in words
    assert words.endswith(
        "See the License for the specific language governing permissions and "
        "limitations under the License."
    )

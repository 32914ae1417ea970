"""The reference pages in docs/ hold what the code cites, and their own links resolve.

Code comments cite ``stream-protocol.md §4.3``, ``push-libraries.md §1 "Pitfalls"`` or
``push-libraries.md P4`` (with or without the ``docs/`` prefix).  Every cited section must exist,
and a quoted name must appear in the cited section.  Inside docs/, every relative link must name
an existing file and heading, every reference-style link must be defined, and every GitHub source
link must be pinned to a commit.  No network: external pages are not fetched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = ("stream-protocol.md", "sdk-payloads.md", "push-libraries.md")
CITING = [
    *(p for d in ("worker", "webhook_app", "tests", "bench") for p in (ROOT / d).rglob("*.py")),
    ROOT / "README.md",
]

_CITATION = re.compile(r"(?:docs/)?(stream-protocol|push-libraries|sdk-payloads)\.md\b(.*)")
_SECTION = re.compile(r"§\s*(\d+(?:\.\d+)?)")
_SECTION_RANGE = re.compile(r"§\s*(\d+)\.(\d+)\s*[\u2013-]\s*§?\s*(\d+)\.(\d+)")
_QUOTED = re.compile(r"\"([^\"]{3,})\"")
_PITFALLS = re.compile(r"\bP(\d)(?:\s*[\u2013/-]\s*P(\d))?")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
_NUMBERED = re.compile(r"^(\d+(?:\.\d+)*)\.?\s")


@dataclass(frozen=True)
class Heading:
    level: int
    title: str
    start: int  # line index


def _headings(lines: list[str]) -> list[Heading]:
    found, fenced = [], False
    for index, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
        match = None if fenced else _HEADING.match(line)
        if match:
            found.append(Heading(len(match.group(1)), match.group(2), index))
    return found


def _slug(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    text = title.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


class Page:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.text = path.read_text(encoding="utf-8")
        self.lines = self.text.splitlines()
        self.headings = _headings(self.lines)
        self.anchors = {_slug(h.title) for h in self.headings}

    def section(self, number: str) -> str | None:
        """The text of the numbered section, subsections included; None if it does not exist."""
        for i, heading in enumerate(self.headings):
            match = _NUMBERED.match(heading.title)
            if match and match.group(1) == number:
                end = len(self.lines)
                for later in self.headings[i + 1 :]:
                    if later.level <= heading.level:
                        end = later.start
                        break
                return "\n".join(self.lines[heading.start : end])
        return None


def _page(name: str) -> Page:
    return Page(DOCS / name)


def _cut(tail: str) -> str:
    """A citation ends at the closing parenthesis, the end of a docstring or inline code."""
    for end in (")", '"""', "``"):
        tail = tail.split(end, 1)[0]
    return tail


def _citations() -> list[tuple[str, str, str]]:
    """(where, page, the text after the page name) for every citation in the code."""
    found = []
    for path in CITING:
        if path.is_relative_to(Path(__file__).parent):
            continue  # this test's own examples
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            for match in _CITATION.finditer(line):
                tail = _cut(match.group(2))
                if not tail.strip() and number + 1 < len(lines):
                    # Wrapped: "(... push-libraries.md\n  §4)" continues on the next line.
                    tail = _cut(lines[number + 1].lstrip(" #"))
                where = f"{path.relative_to(ROOT)}:{number + 1}"
                found.append((where, f"{match.group(1)}.md", tail))
    return found


def test_the_code_cites_the_reference_pages() -> None:
    assert len(_citations()) >= 20  # a broken scan would make the checks below vacuous


@pytest.mark.parametrize(("where", "page_name", "tail"), _citations())
def test_cited_sections_exist_and_hold_the_quoted_name(
    where: str, page_name: str, tail: str
) -> None:
    page = _page(page_name)
    numbers = set(_SECTION.findall(tail))
    for major, first, _major2, last in _SECTION_RANGE.findall(tail):
        numbers |= {f"{major}.{n}" for n in range(int(first), int(last) + 1)}
    for number in sorted(numbers):
        assert page.section(number) is not None, f"{where}: {page_name} has no §{number}"
    quoted_in = "\n".join(s for n in numbers if (s := page.section(n))) or page.text
    for quoted in _QUOTED.findall(tail):
        assert quoted.lower() in quoted_in.lower(), f"{where}: {quoted!r} not in {page_name}"
    for first, last in _PITFALLS.findall(tail):
        for n in range(int(first), int(last or first) + 1):
            assert f"**P{n}**" in page.text, f"{where}: {page_name} does not describe P{n}"


@pytest.mark.parametrize("name", PAGES)
def test_sections_are_numbered_once(name: str) -> None:
    numbers = [
        m.group(1) for h in _page(name).headings if (m := _NUMBERED.match(h.title)) is not None
    ]
    assert len(numbers) == len(set(numbers))


@pytest.mark.parametrize("name", [*PAGES, "README.md"])
def test_relative_links_resolve(name: str) -> None:
    page = _page(name)
    for target, anchor in re.findall(r"\]\((?!https?://)([^)#\s]*)(?:#([^)\s]*))?\)", page.text):
        linked = page if not target else None
        if target:
            path = (DOCS / target).resolve()
            assert path.exists(), f"{name}: link to missing {target}"
            if path.suffix == ".md" and path.parent == DOCS:
                linked = _page(path.name)
        if anchor and linked is not None:
            assert anchor in linked.anchors, f"{name}: no heading for #{anchor} in {target or name}"


@pytest.mark.parametrize("name", [*PAGES, "README.md"])
def test_reference_links_are_defined_and_github_sources_pinned(name: str) -> None:
    text = _page(name).text
    defined = dict(re.findall(r"^\[([^\]]+)\]:\s+(\S+)", text, flags=re.MULTILINE))
    prose = re.sub(r"^\[[^\]]+\]:.*$", "", text, flags=re.MULTILINE)
    prose = re.sub(r"`[^`\n]*`", "", prose)  # inline code: userInfo["stream"]["call_cid"]
    for label in re.findall(r"\]\[([^\]]+)\]", prose):
        assert label in defined, f"{name}: [{label}] is used but not defined"
    links = [*defined.values(), *re.findall(r"\]\((https?://[^)\s]+)\)", prose)]
    for url in links:
        match = re.match(r"https://github\.com/[^/]+/[^/]+/(?:blob|tree)/([^/#]+)", url)
        if match:
            assert re.fullmatch(r"[0-9a-f]{40}", match.group(1)), f"{name}: unpinned {url}"

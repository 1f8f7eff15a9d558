"""The code points at the repository's own docs, and every page and section it names exists.

References read ``docs/<page>.md`` or ``docs/<page>.md, 'Section'`` (more sections may follow,
each quoted). A section is a heading of that page, or the bold lead of one of its bullets (how
``docs/decisions.md`` is written). The design contract the project started from is not part of
the repository, so nothing may point at it (the word DESIGN and a section sign).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

_DESIGN = re.compile(r"DESIGN\s*(?:#\s*)?§")
_REFERENCE = re.compile(r"(?<![\w/\[\"':])docs/([\w-]+)\.md"
                        r"((?:,?\s*(?:#\s*)?(?:and\s+)?'[^']{1,80}')*)")
_QUOTED = re.compile(r"'([^']+)'")


def _sources() -> list[Path]:
    files = [*(ROOT / "flowstate_jupyter").rglob("*.py"), *(ROOT / "tests").rglob("*.py"),
             *(ROOT / "benchmarks").rglob("*.py")]
    return sorted(p for p in files if ".venv" not in p.parts)


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _sections(page: Path) -> set[str]:
    """The headings of a Markdown page and the bold leads of its bullets, as written."""
    found = set()
    for line in page.read_text().splitlines():
        heading = re.match(r"#+\s+(.*\S)", line)
        if heading:
            found.add(heading.group(1))
        lead = re.match(r"\s*[*-]\s+\*\*(.+?)\*\*", line)
        if lead:
            found.add(lead.group(1).rstrip(".:"))
    return found


def _references(text: str) -> list[tuple[str, list[str]]]:
    """``(page, [section, ...])`` for each docs reference in ``text``; a section quoted across a
    line break is joined with one space."""
    return [(match.group(1), [" ".join(s.split()) for s in _QUOTED.findall(match.group(2))])
            for match in _REFERENCE.finditer(text)]


def test_no_source_file_or_test_points_at_the_design_contract() -> None:
    offenders = [f"{_name(p)}:{text[:m.start()].count(chr(10)) + 1}"
                 for p in _sources()
                 for text in [p.read_text()] for m in _DESIGN.finditer(text)]
    assert not offenders, ("these point at DESIGN, a file users of the repository do not have; "
                           "point at docs/<page>.md, 'Section' instead:\n" + "\n".join(offenders))


def test_every_docs_page_and_section_the_code_names_exists() -> None:
    missing = []
    count = 0
    for path in _sources():
        for page_name, sections in _references(path.read_text()):
            count += 1
            page = DOCS / f"{page_name}.md"
            if not page.is_file():
                missing.append(f"{_name(path)}: docs/{page_name}.md does not exist")
                continue
            known = _sections(page)
            missing += [f"{_name(path)}: docs/{page_name}.md has no section {s!r}"
                        for s in sections if s not in known]
    assert count > 40, f"only {count} references found: is the pattern still right?"
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("text", ["(DESIGN " + "\u00a73)", "writer (DESIGN\n\u00a713):",
                                  "# DESIGN" + "\u00a76"])
def test_a_design_reference_is_found_also_across_a_line_break(text: str) -> None:
    assert _DESIGN.search(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("see docs/concepts.md, 'Traces'.", [("concepts", ["Traces"])]),
    ("(docs/concepts.md, 'Durable runs', 'Traces')", [("concepts", ["Durable runs", "Traces"])]),
    ("docs/guide.md,\n'In a\n    notebook')", [("guide", ["In a notebook"])]),
    ("docs/concepts.md, 'Traces' and 'Durable runs'", [("concepts", ["Traces", "Durable runs"])]),
    ("docs/architecture.md for the layers", [("architecture", [])]),
])
def test_references_are_read_with_their_sections(text: str, expected: list) -> None:
    assert _references(text) == expected


def test_a_section_the_page_lacks_is_found_missing(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n## Scopes\n\n* **Magic lines are data**: values are JSON.\n")
    assert _sections(page) == {"Page", "Scopes", "Magic lines are data"}
    assert "Schemas" not in _sections(page)

"""Every relative link and image in the README and docs/ points at a file of the checkout (results move between
folders; a link left behind is a dead end for a reader)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def relative_links(document: Path) -> list[str]:
    targets = (match.group(1) for match in LINK.finditer(document.read_text()))
    return [t for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def dead_links(documents: list[Path], root: Path = ROOT) -> list[str]:
    return [
        f"{document.relative_to(root)}: {target}"
        for document in documents
        for target in relative_links(document)
        if not (document.parent / target.split("#", 1)[0]).exists()
    ]


def test_relative_links_in_the_docs_resolve() -> None:
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    assert len(documents) > 5
    assert dead_links(documents) == []


def test_a_link_to_a_moved_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "report.md").write_text("x")
    document = tmp_path / "README.md"
    document.write_text("[ok](results/report.md#bar) ![gone](results/headline.png) [web](https://x.org/a.md) [top](#a)")
    assert dead_links([document], tmp_path) == ["README.md: results/headline.png"]

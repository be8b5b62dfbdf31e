"""Every relative link in every Markdown file of the repository resolves inside it."""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.conftest import REPO

# [text](target "title") and ![alt](target); [label]: target (reference definitions).
INLINE = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
CODE = re.compile(r"`[^`\n]*`")


@cache
def markdown_files() -> tuple[Path, ...]:
    """The repository's Markdown, tracked or new (what git ignores is not the repository's)."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard",
         "--", "*.md"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return tuple(REPO / name for name in sorted(set(listed.split("\0"))) if name)


def links(text: str) -> list[str]:
    text = CODE.sub("", FENCE.sub("", text))  # code shows links, it does not make them
    return INLINE.findall(text) + REFERENCE.findall(text)


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*$", FENCE.sub("", path.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower()).replace(" ", "-")
        found.add(slug)
    return found


def broken(path: Path) -> list[str]:
    problems = []
    for target in links(path.read_text()):
        parts = urlsplit(target)
        if parts.scheme or target.startswith("//"):
            continue  # a URL (https:, mailto:): not a file of ours
        where = path if not parts.path else (path.parent / unquote(parts.path)).resolve()
        if not where.is_relative_to(REPO):
            problems.append(f"{target}: outside the repository")
        elif not where.exists():
            problems.append(f"{target}: no such file")
        elif parts.fragment and where.suffix == ".md" and parts.fragment not in anchors(where):
            problems.append(f"{target}: no heading #{parts.fragment} in {where.name}")
    return problems


def test_the_link_checker_sees_links() -> None:
    assert links("[a](b.md) ![c](d.png) `[e](f)`\n[g]: h.md") == ["b.md", "d.png", "h.md"]
    assert "5-databases" in anchors(REPO / "docs" / "cluster.md")
    assert len(markdown_files()) >= 5


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves_inside_the_repository(path: Path) -> None:
    assert broken(path) == []

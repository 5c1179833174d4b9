"""The README and docs/: every relative link and image resolves, the README stays short, the
layout page names every module, and the public names the README shows exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import tlbench

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 200

# [text](target) and ![alt](target); a target may carry a title: (path "title").
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE = re.compile(r"`[^`\n]*`")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def relative_links(text: str) -> list[str]:
    """The link and image targets of a Markdown text that name a file: outside code, without a
    scheme, the #anchor dropped."""
    text = CODE.sub("", FENCE.sub("", text))
    targets = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # http(s)://, mailto:, an anchor on the same page
        targets.append(target.split("#", 1)[0])
    return targets


def broken_links(page: Path) -> list[str]:
    return [
        t
        for t in relative_links(page.read_text(encoding="utf-8"))
        if not (page.parent / t).exists()
    ]


def test_the_link_reader_finds_links_and_images_and_skips_code_urls_and_anchors() -> None:
    text = (
        'See [a](docs/a.md) and ![fig](../results/x.png "title"), [b](b.md#part), [web](https://x.org),\n'
        "[here](#top), `[not](code.md)`.\n```bash\necho [no](fence.md)\n```\n"
    )
    assert relative_links(text) == ["docs/a.md", "../results/x.png", "b.md"]


def test_a_missing_target_is_reported(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("x")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md) [gone](missing.md) ![img](fig/none.png)\n")
    assert broken_links(page) == ["missing.md", "fig/none.png"]


def test_the_docs_exist_and_link_into_each_other() -> None:
    names = {p.name for p in pages()}
    for page in ("studies.md", "methods.md", "video.md", "commands.md", "how-numbers-are-made.md",
                 "results-format.md", "layout.md"):  # fmt: skip
        assert page in names
        assert f"docs/{page}" in relative_links((ROOT / "README.md").read_text(encoding="utf-8"))


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_image_resolves(page: Path) -> None:
    assert relative_links(page.read_text(encoding="utf-8")), f"{page.name} links nowhere"
    assert broken_links(page) == []


def test_the_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_the_layout_page_names_every_module_and_only_modules_that_exist() -> None:
    """docs/layout.md has a line per module: a module added, moved or removed updates it."""
    text = (ROOT / "docs" / "layout.md").read_text(encoding="utf-8")
    named = set(re.findall(r"^\| `([\w/]+\.py)` \|", text, re.M))
    package = ROOT / "tlbench"
    modules = {
        p.relative_to(package).as_posix()
        for p in package.rglob("*.py")
        if p.name != "__init__.py" or p.parent == package  # a folder's __init__ is its folder line
    }
    assert sorted(modules - named) == [], "modules missing from docs/layout.md"
    assert sorted(named - modules) == [], "docs/layout.md names modules that do not exist"


def test_the_public_names_the_readme_shows_exist() -> None:
    """The README's Python examples call `tlbench.NAME`: each name must resolve (lazily imported)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    code = "\n".join(re.findall(r"```python\n(.*?)```", text, re.S))
    names = sorted(set(re.findall(r"\btlbench\.(\w+)", code)))
    assert names, "the README shows no Python"
    assert [n for n in names if not hasattr(tlbench, n)] == []

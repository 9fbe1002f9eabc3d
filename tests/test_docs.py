"""The documentation stays true: generated parts are current, the Python API page runs, relative links resolve."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from selftaught.cli.reference import REGENERATE, SCHEMA_BEGIN, SCHEMA_END, cli_markdown, schema_markdown

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted([ROOT / "README.md", *DOCS.rglob("*.md")])
_FENCED = re.compile(r"^(```+|~~~+)[^\n]*\n.*?^\1[ \t]*$", flags=re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.slow
def test_the_cli_reference_is_current() -> None:
    assert (DOCS / "cli.md").read_text(encoding="utf-8") == cli_markdown(), (
        f"docs/cli.md is not what the commands' --help says now: regenerate it with `{REGENERATE}`"
    )


def test_the_schema_in_records_md_is_current() -> None:
    page = (DOCS / "records.md").read_text(encoding="utf-8")
    assert SCHEMA_BEGIN in page and SCHEMA_END in page, f"docs/records.md lost its {SCHEMA_BEGIN} block"
    generated = page.split(SCHEMA_BEGIN, 1)[1].split(SCHEMA_END, 1)[0]
    assert generated == f"\n{schema_markdown()}", (
        f"the schema in docs/records.md is not what the migrations make now: regenerate it with `{REGENERATE}`"
    )


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """The ```python blocks of a page, each with the line its code starts at."""
    text = page.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, match.start(1)) + 1, match.group(1))
        for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    ]


@pytest.mark.slow
def test_every_python_example_of_the_api_page_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In order, in one namespace, in an empty folder: as a reader following the page in one session."""
    blocks = python_blocks(DOCS / "python-api.md")
    assert len(blocks) >= 10, "the page lost its examples"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "python_api_examples"}
    for line, code in blocks:
        # Padded so that a traceback names the page's own line.
        exec(compile("\n" * (line - 1) + code, str(DOCS / "python-api.md"), "exec"), namespace)
    for verb in ("improve", "meta_utility", "run", "resume", "replay", "transfer", "unsandboxing_experiment"):
        assert f"selftaught.{verb}(" in "".join(code for _, code in blocks), f"no example calls {verb}"


def github_anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the page's headings: lower case, punctuation dropped, spaces as hyphens."""
    anchors: set[str] = set()
    text = _FENCED.sub("", page.read_text(encoding="utf-8"))
    for heading in re.findall(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", text, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchor, number = slug, 0
        while anchor in anchors:
            number += 1
            anchor = f"{slug}-{number}"
        anchors.add(anchor)
    return anchors


def relative_links(page: Path) -> list[str]:
    """The link targets of a page outside code, other than web addresses."""
    text = _CODE_SPAN.sub("", _FENCED.sub("", page.read_text(encoding="utf-8")))
    return [target for target in _LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", target)]


@pytest.mark.parametrize("page", PAGES, ids=[str(page.relative_to(ROOT)) for page in PAGES])
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in github_anchors(destination):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_readme_links_every_page() -> None:
    readme = set(relative_links(ROOT / "README.md"))
    missing = [page for page in PAGES if page.parent != ROOT and str(page.relative_to(ROOT)) not in readme]
    assert not missing, f"the README does not link {[str(page.relative_to(ROOT)) for page in missing]}"

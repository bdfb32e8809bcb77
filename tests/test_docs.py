"""The guides in ``docs/`` run as a user runs them, and their links lead somewhere.

Every ```` ```python ```` block is a complete program, run in a fresh
interpreter in a temporary folder; a trailing ``# text`` comment on a
``print(...)`` line is what that line prints, checked in order. Blocks fenced
```` ```python no-run ```` are illustrations (they need AWS or a server) and
are not run. A block fenced ```` ```python file=NAME.py ```` is a module the
guide asks the reader to save: it is written into the folder of every other
block of its guide. A block fenced ```` ```python pytest ```` is a test module:
it is written to a file and a sample of its tests is run with pytest (the
whole conformance suites run in ``test_store_conformance.py`` and
``test_entity_conformance.py``).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
GUIDES = sorted(DOCS.glob("*.md"))
FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.S | re.M)
PRINTED = re.compile(r"^\s*print\(.*\)\s+# (.+)$", re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
PYTEST_SAMPLE = (
    "test_expected_version or retry_at_same_place or concurrent_writers or tailing_reader"
    " or commands_are_saved or concurrent_commands or snapshot_schema_versions"
)


def blocks(kind: str) -> list[tuple[str, str]]:
    """``(id, source)`` of the python blocks whose info string is ``kind`` ("" for plain ones)."""
    found = []
    for guide in GUIDES:
        for n, match in enumerate(FENCE.finditer(guide.read_text(encoding="utf-8"))):
            if match.group(1).strip() == kind:
                found.append((f"{guide.stem}-{n}", match.group(2)))
    return found


def modules(name: str) -> dict[str, str]:
    """The ``file=`` blocks of the guide that block ``name`` is in: file name -> source."""
    guide = DOCS / f"{name.rsplit('-', 1)[0]}.md"
    found = {}
    for match in FENCE.finditer(guide.read_text(encoding="utf-8")):
        info = match.group(1).strip()
        if info.startswith("file="):
            found[info.removeprefix("file=")] = match.group(2)
    return found


PROGRAMS = blocks("")
TEST_MODULES = blocks("pytest")


def test_every_guide_has_runnable_code_and_known_fences() -> None:
    assert GUIDES, "no docs/*.md"
    for guide in GUIDES:
        for match in FENCE.finditer(guide.read_text(encoding="utf-8")):
            info = match.group(1).strip()
            assert info in ("", "no-run", "pytest") or re.fullmatch(r"file=\w+\.py", info), (guide.name, info)
    assert len(PROGRAMS) >= 15


def run_block(name: str, source: str, test_module: bool) -> subprocess.CompletedProcess[str]:
    """Run block ``name`` in a fresh interpreter, in a temporary folder with its guide's modules.

    A program runs as ``python -c``; a test module is saved and run by pytest (a sample of it).
    """
    with tempfile.TemporaryDirectory() as folder:
        for file, text in modules(name).items():
            (Path(folder) / file).write_text(text, encoding="utf-8")
        command = [sys.executable, "-c", source]
        if test_module:
            (Path(folder) / "test_guide_module.py").write_text(source, encoding="utf-8")
            quiet = ["-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:nbmake"]
            command = [sys.executable, "-m", "pytest", *quiet, "-k", PYTEST_SAMPLE]
        return subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def runs() -> dict[str, subprocess.CompletedProcess[str]]:
    """Every block's run; they run a few at a time (much of their time is spent waiting)."""
    todo = [(name, source, True) for name, source in TEST_MODULES]
    todo += [(name, source, False) for name, source in PROGRAMS]
    todo.sort(key=lambda block: not (block[2] or "moto" in block[1]))  # the slow ones first
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = pool.map(run_block, *zip(*todo, strict=True))
        return dict(zip([name for name, _, _ in todo], done, strict=True))


@pytest.mark.parametrize(("name", "source"), PROGRAMS, ids=[name for name, _ in PROGRAMS])
def test_guide_example_runs(
    name: str, source: str, runs: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    assert "anyio.run(" in source, f"{name}: a guide's program ends with anyio.run(main)"
    done = runs[name]
    assert done.returncode == 0, done.stderr
    printed = iter(done.stdout.splitlines())
    for expected in PRINTED.findall(source):
        assert any(line == expected for line in printed), (
            f"{name}: {expected!r} not printed (in order) in:\n{done.stdout}"
        )


@pytest.mark.parametrize(("name", "source"), TEST_MODULES, ids=[name for name, _ in TEST_MODULES])
def test_guide_test_module_passes(
    name: str, source: str, runs: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    done = runs[name]
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\b\d+ passed\b", done.stdout), done.stdout
    assert "skipped" not in done.stdout, done.stdout


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("guide", GUIDES, ids=[g.name for g in GUIDES])
def test_relative_links_point_to_existing_files_and_headings(guide: Path) -> None:
    text = re.sub(r"^```.*?^```", "", guide.read_text(encoding="utf-8"), flags=re.S | re.M)
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (guide.parent / path).resolve() if path else guide
        assert resolved.exists(), f"{guide.name}: link to missing {target}"
        if anchor and resolved.suffix == ".md":
            assert anchor in anchors(resolved), f"{guide.name}: no heading #{anchor} in {path or guide.name}"


def test_index_links_every_guide() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    for guide in GUIDES:
        if guide.name != "index.md":
            assert f"({guide.name})" in index, f"index.md does not link {guide.name}"

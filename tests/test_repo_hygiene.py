"""The repository stands alone: test modules share helpers through helper
modules, and what the code cites is inside the repository.

A test module importing another makes pytest collect (and run the module
code of) the imported one twice, and ties helpers to a test file's fate. A
citation of ``spec/formats.md`` pointed at a file only one machine had; the
code cites ``docs/`` instead, by section heading, and a heading that is
renamed or removed must take its citations with it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CITING = ("capture", "tests", "scripts", "qemu")
"""Folders whose files may cite documentation."""

_OUTSIDE = re.compile(
    r"(?<![\w./-])spec/"  # spec/formats.md and friends, not docs/...
    r"|shared/spec"  # ../shared/spec, /work/shared/spec
    r"|(?<![\w/])(?:formats|capture-behaviour|initramfs)\.md"  # a bare spec name
    r"|\bspec \d"  # "(spec 2.1)"
)
_DOCS_CITATION = re.compile(r"docs/(\w+\.md)\s*§\"([^\"]+)\"")


def _test_modules() -> list[Path]:
    return sorted((REPO / "tests").glob("test_*.py"))


def _imported_modules(path: Path) -> list[str]:
    """Every module ``path`` imports, relative imports written as ``.name``."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names.append(base)
            if node.module is None:  # from . import test_x
                names += [base + alias.name for alias in node.names]
    return names


def _is_test_module(name: str) -> bool:
    return name.rsplit(".", 1)[-1].startswith("test_")


def test_no_test_module_imports_another() -> None:
    offenders = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in _test_modules()
        for name in _imported_modules(path)
        if _is_test_module(name)
    ]
    assert offenders == [], "move shared helpers into a helper module: " + "; ".join(offenders)


def test_the_import_check_sees_every_form(tmp_path: Path) -> None:
    """The check above must be able to fail: each way of importing a test module."""
    source = tmp_path / "test_sample.py"
    source.write_text(
        "import tests.test_a\nfrom tests.test_b import x\nfrom .test_c import y\n"
        "from . import test_d\nfrom tests import realcores\n"
    )
    found = [name for name in _imported_modules(source) if _is_test_module(name)]
    assert found == ["tests.test_a", "tests.test_b", ".test_c", ".test_d"]


def _source_files() -> list[Path]:
    files = []
    for folder in CITING:
        for path in sorted((REPO / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and _is_text(path):
                files.append(path)
    return files


def _is_text(path: Path) -> bool:
    try:
        path.read_text()
    except (UnicodeDecodeError, OSError):
        return False
    return True


def test_nothing_cites_a_file_outside_the_repository() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in _source_files()
        if path != Path(__file__).resolve()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if _OUTSIDE.search(line)
    ]
    assert offenders == [], "cite docs/ instead:\n" + "\n".join(offenders)


def test_the_outside_pattern_tells_docs_from_spec() -> None:
    assert _OUTSIDE.search("Layout (spec/formats.md 4.1)")
    assert _OUTSIDE.search("Written from /work/shared/spec/formats.md")
    assert _OUTSIDE.search('"""formats.md 2.3 sparse walk"""')
    assert _OUTSIDE.search("from VMCOREINFO and the PT_LOADs (spec 2.1)")
    assert not _OUTSIDE.search('Layout (docs/formats.md §"File layout")')
    assert not _OUTSIDE.search("see docs/capture.md")


def _headings(document: Path) -> set[str]:
    return {
        " ".join(line.lstrip("#").split())
        for line in document.read_text().splitlines()
        if line.startswith("#")
    }


def test_every_docs_citation_names_a_heading() -> None:
    missing = []
    for path in _source_files():
        for match in _DOCS_CITATION.finditer(path.read_text()):
            document, heading = REPO / "docs" / match.group(1), " ".join(match.group(2).split())
            if not document.is_file() or heading not in _headings(document):
                missing.append(f'{path.relative_to(REPO)}: docs/{match.group(1)} §"{heading}"')
    assert missing == [], "no such section: " + "; ".join(missing)

"""Every ```python block in README.md and docs/*.md runs as written, on a CPU.

Two kinds of block:

- A block whose first line names a file (``# conftest.py``, ``# test_generation.py``,
  ``# pyproject.toml``, in any language) is one file of that document's example project.
  The files of one document are written together and run with pytest through
  ``pytester``, as a user would run them: every test passes or skips, none fails, and
  the recommended configuration leaves no warning.
- Any other python block is a script: it is executed in a fresh namespace in an empty
  temporary directory, against the shipped tiny models.

Blocks in other languages (bash, console, text, json) are not run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))

_FENCE = re.compile(r"^```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^```", re.MULTILINE | re.DOTALL)
_FILE_HEADER = re.compile(r"#\s*(?P<name>[\w][\w./-]*\.(?:py|toml|ini|cfg))\s*$")


@dataclass(frozen=True)
class Block:
    document: Path
    line: int
    language: str
    text: str

    @property
    def file_name(self) -> str | None:
        """The project file this block is, when its first line names one."""
        first = self.text.split("\n", 1)[0]
        match = _FILE_HEADER.fullmatch(first.strip())
        return None if match is None else match.group("name")

    @property
    def label(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def blocks(document: Path) -> list[Block]:
    text = document.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        found.append(Block(document, line, match.group("lang"), match.group("body")))
    return found


ALL_BLOCKS = [block for document in DOCUMENTS for block in blocks(document)]
SCRIPTS = [b for b in ALL_BLOCKS if b.language == "python" and b.file_name is None]
PROJECTS = {
    document: [b for b in blocks(document) if b.file_name is not None]
    for document in DOCUMENTS
    if any(b.language == "python" and b.file_name is not None for b in blocks(document))
}


def test_the_documents_have_python_blocks_to_run() -> None:
    python = [b for b in ALL_BLOCKS if b.language == "python"]
    assert len(python) >= 6
    assert {b.document.name for b in python} >= {"writing-tests.md", "loading.md", "plugin.md"}
    # Every python block is run by one of the two tests below.
    assert len(python) == len(SCRIPTS) + sum(
        1 for files in PROJECTS.values() for b in files if b.language == "python"
    )


def test_a_project_names_each_file_once() -> None:
    for document, files in PROJECTS.items():
        names = [b.file_name for b in files]
        assert len(names) == len(set(names)), f"{document.name} writes a file twice: {names}"


@pytest.mark.parametrize("block", SCRIPTS, ids=[b.label for b in SCRIPTS])
def test_python_block_runs(
    block: Block,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    code = compile(block.text, block.label, "exec")
    exec(code, {"__name__": "__doc_snippet__"})


@pytest.mark.parametrize(
    "document", list(PROJECTS), ids=[str(d.relative_to(ROOT)) for d in PROJECTS]
)
def test_document_project_runs_under_pytest(document: Path, pytester: pytest.Pytester) -> None:
    for block in PROJECTS[document]:
        assert block.file_name is not None
        target = pytester.path / block.file_name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.text, encoding="utf-8")
    has_config = any(b.file_name in ("pyproject.toml", "pytest.ini") for b in PROJECTS[document])
    result = pytester.runpytest_subprocess(
        "-p", "no:randomly", "-p", "no:cacheprovider", "--gpuinfer"
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0, result.stdout.str()
    assert outcomes.get("errors", 0) == 0, result.stdout.str()
    assert outcomes.get("passed", 0) + outcomes.get("skipped", 0) >= 1
    if has_config:
        # The recommended configuration carries the filters its own tests need.
        assert "warnings" not in outcomes, result.stdout.str()

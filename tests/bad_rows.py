"""Shared machinery of the bad-input tables in test_bad_outputs.py and test_bad_features.py.

A row is one bad input: its exit code (or exception), the one line it must give, and for
writers the files that must come out unchanged (bytes and mtime compared).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
USAGE_ERROR = 4
COLLECTION_ERROR = 2
PASSING_TEST = "def test_a():\n    pass\n"

Setup = Callable[[Path], None]


@dataclass(frozen=True)
class Row:
    """One bad input. ``kind``: cli, plugin, mark, suite (a pytester run whose test fails
    with one line), load_model or assertion."""

    id: str
    kind: str
    args: tuple[Any, ...] = ()
    needle: str = ""
    code: int = 2
    files: Mapping[str, str] = field(default_factory=dict)
    """name -> text, or "@report" / "@audit" / "@export" (a real one, made once)."""
    setup: Setup | None = None
    keep: tuple[str, ...] = ()
    """Files that exist before the run and must be byte-for-byte the same after it."""
    env: Mapping[str, str] = field(default_factory=dict)
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    stdout_full: bool = False
    timeout: float = 120


def params(rows: list[Row]) -> list[Any]:
    return [pytest.param(row, id=f"{row.kind}:{row.id}") for row in rows]


def one_line(text: str, needle: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{text}"
    assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def write_files(directory: Path, files: Mapping[str, str], artefacts: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        content = artefacts[text] if text.startswith("@") and text in artefacts else text
        path.write_bytes(content.encode("utf-8", errors="surrogateescape"))


def snapshot(directory: Path, names: tuple[str, ...]) -> dict[str, tuple[bytes, int]]:
    taken = {}
    for name in names:
        path = directory / name
        assert path.is_file(), f"{name} must exist before the run"
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # an mtime any write would move
        taken[name] = (path.read_bytes(), path.stat().st_mtime_ns)
    return taken


def assert_unchanged(directory: Path, before: Mapping[str, tuple[bytes, int]]) -> None:
    for name, (content, mtime) in before.items():
        path = directory / name
        assert path.read_bytes() == content, f"{name} was changed"
        assert path.stat().st_mtime_ns == mtime, f"{name} was rewritten"
    strays = [p.name for p in directory.rglob(".*.tmp")]
    assert strays == [], f"temporary files left behind: {strays}"


def environ() -> dict[str, str]:
    pythonpath = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}


def run_cli(row: Row, directory: Path, artefacts: Mapping[str, str]) -> None:
    write_files(directory, row.files, artefacts)
    if row.setup is not None:
        row.setup(directory)
    before = snapshot(directory, row.keep)
    argv = [sys.executable, "-m", "pytest_gpuinfer.cli", *(artefacts.get(a, a) for a in row.args)]
    stdout_target: Any = subprocess.PIPE
    if row.stdout_full:
        if not Path("/dev/full").exists():
            pytest.skip("no /dev/full on this system")
        stdout_target = open("/dev/full", "w")  # noqa: SIM115 - closed below
    try:
        done = subprocess.run(
            argv,
            cwd=directory,
            env=environ(),
            stdout=stdout_target,
            stderr=subprocess.PIPE,
            text=True,
            timeout=row.timeout,
            check=False,
        )
    finally:
        if row.stdout_full:
            stdout_target.close()
    stdout = done.stdout or ""
    assert "Traceback" not in done.stderr + stdout
    assert done.returncode == row.code, done.stderr
    assert one_line(done.stderr, row.needle).startswith("gpuinfer")
    if "--json" in row.args:  # the error is a JSON object on stdout too
        error = json.loads(stdout)
        assert error["exit_code"] == 2 and row.needle in error["error"]
    elif not row.stdout_full:
        assert stdout == ""
    assert_unchanged(directory, before)


def run_plugin(
    row: Row,
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    artefacts: Mapping[str, str],
) -> None:
    files = dict(row.files)
    if not any(Path(name).name.startswith("test_") for name in files):
        files["test_a.py"] = PASSING_TEST
    write_files(pytester.path, files, artefacts)
    if row.setup is not None:
        row.setup(pytester.path)
    before = snapshot(pytester.path, row.keep)
    for name, value in row.env.items():
        monkeypatch.setenv(name, value)
    result = pytester.runpytest("-p", "no:randomly", "-p", "no:cacheprovider", *row.args)
    output = "\n".join(result.outlines + result.errlines)
    assert "Traceback" not in output
    assert result.ret == row.code, output
    if row.kind == "plugin":
        errors = [line for line in result.errlines if line.strip()]
        assert len(errors) == 1 and row.needle in errors[0], output
    else:
        # A bad mark (collection error) or a bad fixture argument (a failed test): the
        # one line names the value; pytest >= 9.2 repeats it in the short summary.
        lines = [
            line
            for line in result.outlines
            if row.needle in line and not line.startswith(("ERROR ", "FAILED "))
        ]
        assert len(lines) == 1, output
        assert not re.search(r"\b[A-Z]\w*Error: ", lines[0]), output
    assert_unchanged(pytester.path, before)


def suite(test_body: str, *, imports: str = "") -> dict[str, str]:
    """A one-test suite file (for ``suite`` rows) around ``test_body``."""
    from pytest_gpuinfer.tiny_models import trained_model_path

    head = f"import pytest\n{imports}\nMODEL = {str(trained_model_path())!r}\n\n"
    return {"test_suite.py": head + test_body}


def json_text(data: object) -> str:
    return json.dumps(data)

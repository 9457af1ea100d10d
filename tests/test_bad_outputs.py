"""The bad-input table of the commands that write files, and of merge and route.

Every writer refuses an output that is an input or another output (symlinks and hard
links included), an empty path, a directory; each such row also checks that no file that
existed before the run changed (bytes and mtime) and that no temporary file was left.
Damaged reports and exports are one line naming the field.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from bad_rows import USAGE_ERROR, Row, environ, params, run_cli, run_plugin

SUITE = """
import pytest

@pytest.mark.gpuinfer(modes=["fp16"], gpus=1)
def test_marked():
    pass

def test_modes(inference_mode):
    pass
"""


def _mutated(text: str, change: Callable[[dict[str, Any]], None]) -> str:
    data = json.loads(text)
    change(data)
    return json.dumps(data)


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A real report, audit and export, made once, and damaged copies of them."""
    where = tmp_path_factory.mktemp("artefacts")
    (where / "test_suite.py").write_text(SUITE)
    pytest_argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p"]
    pytest_argv += ["no:randomly", "--gpuinfer-profile", "t4", "test_suite.py"]
    for extra in (["--gpuinfer-report", "r.json"], ["--co", "--gpuinfer-requirements", "e.json"]):
        subprocess.run(
            pytest_argv + extra, cwd=where, env=environ(), check=True, capture_output=True
        )
    audit = subprocess.run(
        [sys.executable, "-m", "pytest_gpuinfer.cli", "audit", "--json", "--profile", "a100"],
        cwd=where,
        env=environ(),
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    report, export = (where / "r.json").read_text(), (where / "e.json").read_text()

    def outcome(data: dict[str, Any]) -> None:
        data["tests"][0]["outcome"] = "exploded"

    def marker(data: dict[str, Any]) -> None:
        data["tests"][0]["marker"] = {"gpus": 0}

    def status(data: dict[str, Any]) -> None:
        next(iter(data["verdicts"].values()))["status"] = "great"

    return {
        "@report": report,
        "@audit": audit,
        "@export": export,
        "@report-tests-object": _mutated(report, lambda d: d.update(tests={"a": 1})),
        "@report-test-string": _mutated(report, lambda d: d.update(tests=["a"])),
        "@report-outcome": _mutated(report, outcome),
        "@report-machine-null": _mutated(report, lambda d: d.update(machine=None)),
        "@report-exitstatus-text": _mutated(report, lambda d: d.update(exitstatus="0")),
        "@audit-status": _mutated(audit, status),
        "@export-marker": _mutated(export, marker),
        "@export-tests-object": _mutated(export, lambda d: d.update(tests={})),
    }


def _link(name: str, target: str, *, hard: bool = False) -> Callable[[Path], None]:
    def make(directory: Path) -> None:
        if hard:
            os.link(directory / target, directory / name)
        else:
            (directory / name).symlink_to(target)

    return make


def cli(id: str, *args: str, needle: str, **extra: Any) -> Row:
    return Row(id, "cli", args, needle, **extra)


def plugin(id: str, *args: str, needle: str, **extra: Any) -> Row:
    return Row(id, "plugin", args, needle, USAGE_ERROR, **extra)


REPORT = {"r.json": "@report"}
SAME = "is the same file as"
MODEL = "@model"

TABLE: list[Row] = [
    # --- merge --html: never over an input ------------------------------------------------
    cli("merge-html-is-input", "merge", "r.json", "--html", "r.json", needle=SAME,
        files=REPORT, keep=("r.json",)),
    cli("merge-html-named-input", "merge", "m1=r.json", "--html", "r.json", needle=SAME,
        files=REPORT, keep=("r.json",)),
    cli("merge-html-symlink-to-input", "merge", "r.json", "--html", "link.html", needle=SAME,
        files=REPORT, setup=_link("link.html", "r.json"), keep=("r.json",)),
    cli("merge-html-hard-link-to-input", "merge", "r.json", "--html", "hard.html",
        needle=SAME, files=REPORT, setup=_link("hard.html", "r.json", hard=True),
        keep=("r.json",)),
    cli("merge-html-empty", "merge", "r.json", "--html", "", needle="--html is empty",
        files=REPORT, keep=("r.json",)),
    cli("merge-html-directory", "merge", "r.json", "--html", ".", needle="is a directory",
        files=REPORT, keep=("r.json",)),
    cli("merge-html-no-folder", "merge", "r.json", "--html", "no/dir/m.html",
        needle="folder 'no/dir' does not exist", files=REPORT, keep=("r.json",)),
    # --- merge: damaged reports, one line naming the field ----------------------------------
    cli("merge-not-utf8", "merge", "r.json", needle="is not UTF-8 text (byte 0xff",
        files={"r.json": "\udcff{}"}),
    cli("merge-tests-not-a-list", "merge", "r.json", needle="tests is an object; expected array",
        files={"r.json": "@report-tests-object"}),
    cli("merge-test-entry-not-object", "merge", "r.json",
        needle="tests[0] is 'a'; expected object", files={"r.json": "@report-test-string"}),
    cli("merge-unknown-outcome", "merge", "r.json",
        needle="tests[0].outcome 'exploded' is not one of: passed, failed",
        files={"r.json": "@report-outcome"}),
    cli("merge-machine-null", "merge", "r.json", needle="machine is null; expected object",
        files={"r.json": "@report-machine-null"}),
    cli("merge-exitstatus-text", "merge", "r.json", needle="exitstatus is '0'; expected integer",
        files={"r.json": "@report-exitstatus-text"}),
    cli("merge-audit-unknown-status", "merge", "a.json", needle="status 'great' is not one of",
        files={"a.json": "@audit-status"}),
    cli("merge-empty-path", "merge", "", needle="report path '' is empty"),
    cli("merge-name-without-file", "merge", "m1=", needle="names machine 'm1' but no file"),
    # --- route: labels are file names, --out a directory -------------------------------------
    cli("route-label-twice", "route", "e.json", "t4=t4", "t4=a100", needle="given twice",
        files={"e.json": "@export"}),
    cli("route-label-twice-by-case", "route", "e.json", "t4=t4", "T4=a100",
        needle="runner label 'T4' is given twice", files={"e.json": "@export"}),
    cli("route-label-dot-dot", "route", "e.json", "../up=t4", needle="'../up'",
        files={"e.json": "@export"}),
    cli("route-label-slash", "route", "e.json", "a/b=t4", needle="'a/b'",
        files={"e.json": "@export"}),
    cli("route-label-leading-dot", "route", "e.json", ".hidden=t4", needle="'.hidden'",
        files={"e.json": "@export"}),
    cli("route-label-newline", "route", "e.json", "a\nb=t4", needle="'a\\nb'",
        files={"e.json": "@export"}),
    cli("route-runner-without-spec", "route", "e.json", "t4=", needle="'t4='",
        files={"e.json": "@export"}),
    cli("route-out-is-a-file", "route", "e.json", "t4=t4", "--out", "f",
        needle="--out 'f' is a file", files={"e.json": "@export", "f": "mine\n"},
        keep=("e.json", "f")),
    cli("route-export-inside-out", "route", "out/t4.txt", "t4=t4", "--out", "out",
        needle=SAME, files={"out/t4.txt": "@export"}, keep=("out/t4.txt",)),
    cli("route-export-bad-marker", "route", "e.json", "t4=t4",
        needle="has a bad marker: gpus=0 is not a whole number >= 1",
        files={"e.json": "@export-marker"}),
    cli("route-export-tests-not-a-list", "route", "e.json", "t4=t4",
        needle="tests is an object; expected array", files={"e.json": "@export-tests-object"}),
    cli("route-export-empty-path", "route", "", "t4=t4", needle="the export path is empty"),
    cli("route-stdout-full", "route", "e.json", "a100=a100", needle="cannot write the output",
        files={"e.json": "@export"}, stdout_full=True),
    cli("route-no-arguments", "route", needle="the following arguments are required"),
    cli("no-command", needle="no command given: expected one of audit"),
    cli("matrix-output-empty", "matrix", "--output", "", needle="matrix --output is empty"),
    # --- bench: its files apart from each other and from --baseline --------------------------
    cli("bench-json-file-and-chart-same", "bench", "--model", MODEL, "--json", "b.png",
        "--chart", "b.png", needle=SAME, files={"b.png": "old chart"}, keep=("b.png",)),
    cli("bench-output-is-baseline", "bench", "--model", MODEL, "--output", "base.json",
        "--baseline", "base.json", needle=SAME, files={"base.json": "{}"},
        keep=("base.json",)),
    cli("bench-output-and-markdown-same", "bench", "--model", MODEL, "--output", "x.md",
        "--markdown", "x.md", needle=SAME, files={"x.md": "# summary\n"}, keep=("x.md",)),
    cli("bench-chart-symlink-to-output", "bench", "--model", MODEL, "--output", "o.json",
        "--chart", "o.png", needle=SAME, files={"o.json": "{}"},
        setup=_link("o.png", "o.json"), keep=("o.json",)),
    cli("bench-json-empty", "bench", "--model", MODEL, "--json", "", needle="--json is empty"),
    cli("bench-output-empty", "bench", "--model", MODEL, "--output", "",
        needle="--output is empty"),
    cli("bench-chart-empty", "bench", "--model", MODEL, "--chart", "",
        needle="--chart is empty"),
    cli("bench-markdown-empty", "bench", "--model", MODEL, "--markdown", "",
        needle="--markdown is empty"),
    # --- plugin: the report, the export and the JUnit XML are three files --------------------
    plugin("report-is-requirements", "--gpuinfer-report", "x.json", "--gpuinfer-requirements",
           "x.json", needle=SAME, files={"x.json": "{}"}, keep=("x.json",)),
    plugin("requirements-symlink-to-report", "--gpuinfer-report", "r.json",
           "--gpuinfer-requirements", "link.json", needle=SAME, files={"r.json": "{}"},
           setup=_link("link.json", "r.json"), keep=("r.json",)),
    plugin("report-is-junitxml", "--gpuinfer-report", "j.xml", "--junitxml", "j.xml",
           needle=SAME, files={"j.xml": "<x/>"}, keep=("j.xml",)),
    plugin("report-is-profile", "--gpuinfer-profile", "p.json", "--gpuinfer-report", "p.json",
           needle=SAME, files={"p.json": json.dumps({"base": "t4"})}, keep=("p.json",)),
    plugin("requirements-empty", "--gpuinfer-requirements", "",
           needle="command line --gpuinfer-requirements is empty; expected a file path"),
    plugin("report-empty", "--gpuinfer-report", "",
           needle="command line --gpuinfer-report is empty"),
]  # fmt: skip


def test_the_table_has_its_rows() -> None:
    assert len(TABLE) >= 40
    assert len({row.id for row in TABLE}) == len(TABLE)
    assert sum(1 for row in TABLE if row.keep) >= 15


@pytest.mark.parametrize("row", params(TABLE))
def test_bad_output(
    row: Row,
    tmp_path: Path,
    artefacts: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    from pytest_gpuinfer.tiny_models import trained_model_path

    names = {**artefacts, MODEL: str(trained_model_path())}
    if row.kind == "cli":
        run_cli(row, tmp_path, names)
    else:
        run_plugin(row, request.getfixturevalue("pytester"), monkeypatch, names)


def test_a_refused_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    from pytest_gpuinfer.outputs import write_with
    from pytest_gpuinfer.probes.errors import InputError

    target = tmp_path / "r.json"
    target.write_text("old")

    def fail_halfway(stream: Any) -> None:
        stream.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(InputError, match="No space left on device"):
        write_with(target, fail_halfway)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_json_writers_never_write_nan(tmp_path: Path) -> None:
    from pytest_gpuinfer.outputs import write_json
    from pytest_gpuinfer.probes.errors import InputError

    target = tmp_path / "b.json"
    with pytest.raises(InputError, match="JSON cannot carry"):
        write_json(target, {"spread": float("nan")})
    assert not target.exists()


def test_a_symlinked_output_replaces_its_target_and_keeps_the_link(tmp_path: Path) -> None:
    from pytest_gpuinfer.outputs import write_text

    (tmp_path / "real.txt").write_text("old")
    (tmp_path / "link.txt").symlink_to("real.txt")
    write_text(tmp_path / "link.txt", "new")
    assert (tmp_path / "link.txt").is_symlink()
    assert (tmp_path / "real.txt").read_text() == "new"

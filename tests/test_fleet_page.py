"""The fleet page and the Markdown summary of `gpuinfer merge`, from real plugin runs.

The page is checked twice: parsed (each cell's state class and text, each reason once,
every link resolves), which runs everywhere; and rendered in headless Chromium by
scripts/check_fleet_page.py (computed colours, visible text), skipped without Chromium.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType

import pytest
from script_modules import load_script

from pytest_gpuinfer.cli.main import main
from pytest_gpuinfer.fleet.page import STATE_COLOURS

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]

SUITE = """
import pytest

@pytest.mark.gpuinfer(compute_capability=">=8.0")
def test_ampere():
    pass

@pytest.mark.gpuinfer(gpus=2)
def test_two_gpus():
    pass

@pytest.mark.gpuinfer(gpus=1)
def test_any_gpu():
    pass

def test_plain():
    pass

def test_own_skip():
    pytest.skip("not on Tuesdays")
"""

NEEDS_TWO = "needs gpus=2; found 1 GPU"


@pytest.fixture
def fleet(pytester: pytest.Pytester) -> list[str]:
    """Three simulated machines: T4, A100, K80 (names t4, a100, k80)."""
    pytester.makepyfile(test_suite=SUITE)
    reports = []
    for profile in ("t4", "a100-40gb", "k80"):
        name = profile.split("-")[0]
        pytester.runpytest(
            "-p", "no:randomly", "--gpuinfer-profile", profile, "--gpuinfer-report", f"{name}.json"
        )
        reports.append(f"{name}={pytester.path / f'{name}.json'}")
    return reports


class _Cells(HTMLParser):
    """Each matrix cell as (table id, row label, column key) -> (state, class, text, refs)."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, str, str], tuple[str, str, str, list[str]]] = {}
        self.reasons: dict[str, str] = {}
        self._table = ""
        self._header: list[str] = []
        self._row: list[str] = []
        self._cell: dict[str, str] | None = None
        self._text: list[str] = []
        self._refs: list[str] = []
        self._reason_id: str | None = None
        self._in_reason_text = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        if tag == "table":
            self._table, self._header = found.get("id", ""), []
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell, self._text, self._refs = found, [], []
        elif tag == "a" and "ref" in found.get("class", ""):
            self._refs.append(found["href"])
        elif tag == "li" and found.get("id", "").startswith("reason-"):
            self._reason_id = found["id"]
        elif tag == "span" and found.get("class") == "reason":
            self._in_reason_text = True

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._text.append(data)
        if self._in_reason_text and self._reason_id:
            self.reasons[self._reason_id] = self.reasons.get(self._reason_id, "") + data

    def handle_endtag(self, tag: str) -> None:
        if tag == "span":
            self._in_reason_text = False
        if tag not in ("td", "th") or self._cell is None:
            return
        text = "".join(self._text).strip()
        if tag == "th":
            self._header.append(text)
        elif self._table in ("tests", "modes") and "state" in self._cell.get("class", ""):
            column = self._header[len(self._row)]
            self.cells[(self._table, self._row[0], column)] = (
                self._cell.get("data-state", ""),
                self._cell.get("class", ""),
                text,
                list(self._refs),
            )
        self._row.append(text)
        self._cell = None


def _page(pytester: pytest.Pytester, reports: list[str]) -> str:
    path = pytester.path / "fleet.html"
    assert main(["merge", "--no-fail-on-unrun", *reports, "--html", str(path)]) == 0
    return path.read_text(encoding="utf-8")


def test_each_cell_has_its_state_and_each_reason_is_printed_once(
    pytester: pytest.Pytester, fleet: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    page = _page(pytester, fleet)
    parsed = _Cells()
    parsed.feed(page)
    cell = {(row.split()[0], column): v for (_, row, column), v in parsed.cells.items()}
    t4, a100, k80 = "M1", "M2", "M3"
    # Requirements met on a simulated profile: "would run", its own class and colour.
    assert cell[("test_suite.py::test_any_gpu", t4)][:3] == (
        "would run",
        "state state-would-run",
        "would run",
    )
    assert cell[("test_suite.py::test_ampere", a100)][0] == "would run"
    # Unmet: "cannot run" and a link to its one numbered reason.
    state, css, text, refs = cell[("test_suite.py::test_ampere", t4)]
    assert (state, css) == ("cannot run", "state state-cannot-run")
    assert re.fullmatch(r"cannot run\[\d+\]", text) and len(refs) == 1
    assert parsed.reasons[refs[0].lstrip("#")] == (
        "needs compute_capability >=8.0; found GPU 0 Tesla T4 (7.5)"
    )
    # One reason shared by three machines' cells: printed once, linked three times.
    two = [cell[("test_suite.py::test_two_gpus", m)][3] for m in (t4, a100, k80)]
    assert two[0] == two[1] == two[2]
    assert parsed.reasons[two[0][0].lstrip("#")] == NEEDS_TWO
    assert page.count(NEEDS_TWO) == 1
    assert cell[("test_suite.py::test_plain", k80)][:3] == (
        "passed",
        "state state-passed",
        "passed",
    )
    # The test's own skip is neither: a plain skip, with its reason.
    assert cell[("test_suite.py::test_own_skip", t4)][0] == "skipped"
    every_ref = {r for v in parsed.cells.values() for r in v[3]}
    assert every_ref == {f"#{key}" for key in parsed.reasons}
    assert all(page.count(html.escape(text)) == 1 for text in parsed.reasons.values())
    # The legend names each state with its own colour, and no two of these look alike.
    legend = re.findall(r'<tr><td class="state (state-[\w-]+)"[^>]*>([^<]+)</td>', page)
    assert [word for _, word in legend] == [
        "passed",
        "failed",
        "would run",
        "cannot run",
        "skipped",
    ]
    colours = [STATE_COLOURS[word] for _, word in legend]
    assert len(set(colours)) == len(colours)
    assert "<script" not in page and "http://" not in page and "https://" not in page


def test_markdown_summary_for_the_job_summary(
    pytester: pytest.Pytester, fleet: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    summary = pytester.path / "summary.md"
    summary.write_text("earlier step\n")
    assert main(["merge", "--no-fail-on-unrun", *fleet, "--markdown", str(summary)]) == 0
    lines = summary.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "earlier step"  # appended, as $GITHUB_STEP_SUMMARY is
    assert lines[1] == "## pytest-gpuinfer: fleet coverage"
    assert "### Tests x machines: 5 tests on 3 machines, 4 ran on no machine" in lines
    assert "| test | M1 | M2 | M3 |" in lines
    row = next(line for line in lines if line.startswith("| `test_suite.py::test_two_gpus`"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    number = re.fullmatch(r"🟠 cannot run \[(\d+)\]", cells[1])
    assert number is not None and cells[1] == cells[2] == cells[3]
    assert (
        f"- **[{number.group(1)}]** needs gpus=2; found 1 GPU (cannot run, 3 cells on M1, M2, M3)"
        in lines
    )
    any_gpu = next(line for line in lines if line.startswith("| `test_suite.py::test_any_gpu`"))
    assert any_gpu.endswith("| 🔵 would run | 🔵 would run | 🔵 would run |")
    legend = next(line for line in lines if line.startswith("Legend: "))
    assert "🔵 **would run**: requirements met on a simulated profile" in legend
    assert sum(NEEDS_TWO in line for line in lines) == 1


def _checker() -> ModuleType:
    return load_script(ROOT / "scripts" / "check_fleet_page.py")


def test_the_page_as_chromium_renders_it(
    pytester: pytest.Pytester, fleet: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    checker = _checker()
    chromium = checker.find_chromium()
    if chromium is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium); the parsed check runs")
    audits = []
    for profile in ("t4", "a100-40gb"):
        main(["audit", "--profile", profile, "--json"])
        path = pytester.path / f"audit-{profile}.json"
        path.write_text(capsys.readouterr().out)
        audits.append(str(path))
    _page(pytester, [*fleet, *audits])
    seen = checker.probe(pytester.path / "fleet.html", chromium)
    assert checker.problems(seen) == []
    by_state: dict[str, set[str]] = {}
    for cell in seen["cells"]:
        by_state.setdefault(cell["state"], set()).add(cell["background"])
    # What a person sees: blue for "would run", orange for "cannot run", grey for a skip.
    assert by_state["would run"] == {"rgb(185, 215, 255)"}
    assert by_state["cannot run"] == {"rgb(255, 207, 143)"}
    assert by_state["skipped"] == {"rgb(226, 226, 226)"}
    assert by_state["passed"] == {"rgb(183, 228, 183)"}
    assert seen["page_text"].count(NEEDS_TWO) == 1
    assert all(cell["visible"] for cell in seen["cells"])
    # The mode table speaks the same colours: a supported mode blue, bf16 on a T4 orange.
    modes = {(c["row"], c["column"]): c for c in seen["cells"] if c["table"] == "modes"}
    assert modes[("bf16", "M1")]["background"] == "rgb(255, 207, 143)"
    assert modes[("bf16", "M1")]["refs"] and modes[("bf16", "M2")]["text"] == "supported"
    assert modes[("bf16", "M2")]["background"] == "rgb(185, 215, 255)"


def test_the_checker_finds_what_a_person_would_miss() -> None:
    """The checks themselves, on what a broken page would show."""
    checker = _checker()
    cell = {"table": "tests", "row": "t", "column": "M1", "visible": True, "refs": []}
    seen = {
        "cells": [
            {**cell, "state": "would run", "text": "would run", "background": "rgb(1, 1, 1)"},
            {**cell, "state": "cannot run", "text": "cannot run", "background": "rgb(1, 1, 1)"},
        ],
        "legend": [],
        "reasons": [{"id": "reason-1", "text": "twice"}, {"id": "reason-2", "text": "twice"}],
        "page_text": "twice and twice",
    }
    assert checker.problems(seen) == [
        "tests: t on M1: cannot run, but names no reason",
        "would run and cannot run look the same (rgb(1, 1, 1))",
        "reason #reason-1 is shown 2 times, not once: twice",
        "reason #reason-2 is shown 2 times, not once: twice",
    ]

"""The merged view as the text table, the HTML page and the Markdown summary show it.

Each cell has one state (``requirements.states``; for the mode matrix: would run,
degraded, cannot run, unknown) and its text. A reason is printed once, numbered in the
order the tables first meet it, and each cell refers to it by number: a 25-test page
whose skips share one reason lists that reason once, not 64 times.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pytest_gpuinfer.fleet.merge import Cell, Coverage, Machine, ModeMatrix, groups_by_gpu
from pytest_gpuinfer.requirements.states import BY_NAME, CANNOT_RUN, NOT_COLLECTED, WOULD_RUN

DEGRADED = "degraded"
UNKNOWN = "unknown"
NOT_JUDGED = "not judged"

MODE_STATES: dict[str, str] = {
    WOULD_RUN: "the audit judges the mode supported there (and the model fits, when given)",
    DEGRADED: "runs there, slowly or through a fallback (the reason says which)",
    CANNOT_RUN: "unsupported there, or the model does not fit: see its reason",
    UNKNOWN: "the audit could not tell (a fact it needs was not read)",
    NOT_JUDGED: "that machine's audit did not judge the mode",
}
"""The mode matrix's states and their legend lines."""

_WITH_REASON = frozenset({CANNOT_RUN, "skipped", DEGRADED, UNKNOWN})
"""States whose cells refer to their reason; "would run" needs none (the legend says it)."""


@dataclass
class Reason:
    number: int
    text: str
    section: str
    """"tests" or "modes": the table whose cells refer to it."""
    states: dict[str, int] = field(default_factory=dict)
    """State -> how many cells of that state refer to it."""
    machines: list[str] = field(default_factory=list)
    """The machine keys (M1, ...) of those cells, in first-seen order."""

    @property
    def cells(self) -> int:
        return sum(self.states.values())

    @property
    def where(self) -> str:
        """ "cannot run, 12 cells on M1, M4"."""
        states = ", ".join(self.states)
        count = self.cells
        return f"{states}, {count} cell{'s' if count != 1 else ''} on {', '.join(self.machines)}"


class Reasons:
    """Numbers each distinct reason once (per section), in the order it is first met."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], Reason] = {}

    def ref(self, text: str, state: str, machine_key: str, section: str) -> int:
        reason = self._by_key.get((section, text))
        if reason is None:
            reason = Reason(len(self._by_key) + 1, text, section)
            self._by_key[(section, text)] = reason
        reason.states[state] = reason.states.get(state, 0) + 1
        if machine_key not in reason.machines:
            reason.machines.append(machine_key)
        return reason.number

    def of(self, section: str) -> list[Reason]:
        return [r for r in self._by_key.values() if r.section == section]


@dataclass(frozen=True)
class CellView:
    state: str
    text: str
    """The text table's short word ("pass", "FAIL", "would run")."""
    refs: tuple[int, ...] = ()
    words: str | None = None
    """What the page and the summary show, when not ``text`` ("passed", "failed")."""

    @property
    def shown(self) -> str:
        return self.text if self.words is None else self.words


@dataclass
class Row:
    label: str
    cells: list[CellView]
    ran: bool = True
    """Tests: the body ran on some machine. Modes: some machine can run the mode."""
    runnable_on: list[str] = field(default_factory=list)
    """Modes only: the machine keys that can run it."""


@dataclass
class Section:
    name: str
    """"tests" or "modes"."""
    machines: list[Machine]
    keys: dict[str, str]
    rows: list[Row]
    reasons: list[Reason]
    legend: list[tuple[str, str]]
    """(state, meaning) for each state the table uses, in legend order."""

    @property
    def by_gpu(self) -> list[tuple[str, list[str]]]:
        return list(groups_by_gpu(self.machines).items())


@dataclass
class View:
    tests: Section | None
    modes: Section | None
    model: str | None = None
    ran_nowhere: list[str] = field(default_factory=list)


def keys_of(machines: list[Machine]) -> dict[str, str]:
    """Machine name -> short column key (M1, M2, ...)."""
    return {m.name: f"M{i}" for i, m in enumerate(machines, start=1)}


def short_text(state: str) -> str:
    known = BY_NAME.get(state)
    return known.short if known is not None else state


def _test_cell(cell: Cell, key: str, reasons: Reasons) -> CellView:
    state = cell.state
    refs: tuple[int, ...] = ()
    if state in _WITH_REASON and cell.reason:
        refs = (reasons.ref(cell.reason, state, key, "tests"),)
    words = "-" if state == NOT_COLLECTED else state
    return CellView(state, short_text(state), refs, words)


def _mode_cell(matrix: ModeMatrix, mode: str, machine: str, key: str, reasons: Reasons) -> CellView:
    verdict = matrix.verdicts.get((mode, machine))
    if verdict is None:
        return CellView(NOT_JUDGED, "-")
    fit = matrix.fits.get((mode, machine))
    fits = fit is None or fit.outcome in ("supported", "degraded")
    if verdict.outcome == "unknown":
        state = UNKNOWN
    elif verdict.outcome not in ("supported", "degraded") or not fits:
        state = CANNOT_RUN
    elif verdict.outcome == "degraded":
        state = DEGRADED
    else:
        state = WOULD_RUN
    text = verdict.outcome
    if fit is not None:
        text += ", fits" if fits else f", fit {fit.outcome}"
    refs: list[int] = []
    if verdict.outcome != "supported" and verdict.reason:
        refs.append(reasons.ref(verdict.reason, state, key, "modes"))
    if fit is not None and not fits and fit.reason:
        refs.append(reasons.ref(fit.reason, state, key, "modes"))
    return CellView(state, text, tuple(refs))


def _legend(
    used: set[str], meanings: dict[str, str], always: tuple[str, ...]
) -> list[tuple[str, str]]:
    return [(s, m) for s, m in meanings.items() if s in used or s in always]


def build(cov: Coverage | None, matrix: ModeMatrix | None) -> View:
    """Every cell's state, text and reason numbers; the reasons; the legends."""
    reasons = Reasons()
    tests = modes = None
    ran_nowhere: list[str] = []
    if cov is not None:
        keys = keys_of(cov.machines)
        rows = []
        for t in cov.tests:
            cells = [_test_cell(cov.cell(t, m.name), keys[m.name], reasons) for m in cov.machines]
            rows.append(Row(t, cells, ran=bool(cov.ran_on(t))))
        used = {c.state for r in rows for c in r.cells}
        meanings = {s.name: s.meaning for s in BY_NAME.values()}
        legend = _legend(used, meanings, ("passed", "failed", WOULD_RUN, CANNOT_RUN))
        tests = Section("tests", cov.machines, keys, rows, reasons.of("tests"), legend)
        ran_nowhere = cov.ran_nowhere
    if matrix is not None:
        keys = keys_of(matrix.machines)
        rows = []
        for mode in matrix.modes:
            cells = [
                _mode_cell(matrix, mode, m.name, keys[m.name], reasons) for m in matrix.machines
            ]
            runnable = [keys[n] for n in matrix.runnable_on(mode)]
            rows.append(Row(mode, cells, ran=bool(runnable), runnable_on=runnable))
        used = {c.state for r in rows for c in r.cells}
        legend = _legend(used, MODE_STATES, (WOULD_RUN, CANNOT_RUN))
        modes = Section("modes", matrix.machines, keys, rows, reasons.of("modes"), legend)
    model = ", ".join(matrix.models) if matrix is not None and matrix.models else None
    return View(tests, modes, model, ran_nowhere)

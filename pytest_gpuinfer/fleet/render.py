"""The merged fleet view as text tables (the HTML page is in page.py, Markdown in
markdown.py; all three are drawn from one ``view.View``)."""

from __future__ import annotations

from pytest_gpuinfer.fleet.merge import Coverage, ModeMatrix
from pytest_gpuinfer.fleet.view import CellView, Reason, Section, View, build


def _machine_lines(section: Section) -> list[str]:
    lines = ["machines, by GPU:"]
    for gpus, names in section.by_gpu:
        lines.append(f"  {gpus}: " + ", ".join(f"{section.keys[n]} {n}" for n in names))
    return lines


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def cell_text(cell: CellView) -> str:
    """ "cannot run [2]": the state's word and its reasons' numbers."""
    return cell.text + "".join(f" [{n}]" for n in cell.refs)


def _reason_lines(reasons: list[Reason]) -> list[str]:
    if not reasons:
        return []
    lines = ["", "reasons:"]
    for reason in reasons:
        lines.append(f"  [{reason.number}] {reason.text}")
        lines.append(f"      ({reason.where})")
    return lines


def _legend_line(section: Section) -> str:
    return "legend: " + "; ".join(f"{state}: {meaning}" for state, meaning in section.legend)


def _coverage_lines(view: View) -> list[str]:
    section = view.tests
    assert section is not None
    lines = [f"coverage: {len(section.rows)} tests x {len(section.machines)} machines", ""]
    lines += _machine_lines(section)
    lines.append("")
    rows = [[row.label, *(cell_text(c) for c in row.cells)] for row in section.rows]
    lines += _table(["test", *(section.keys[m.name] for m in section.machines)], rows)
    lines += _reason_lines(section.reasons)
    lines += ["", _legend_line(section)]
    lines += ["", f"ran on no machine: {len(view.ran_nowhere)}"]
    lines += [f"  {t}" for t in view.ran_nowhere]
    return lines


def _modes_lines(view: View) -> list[str]:
    section = view.modes
    assert section is not None
    model = f" (model: {view.model})" if view.model else ""
    lines = [f"modes: which machines can run each mode{model}", ""]
    lines += _machine_lines(section)
    lines.append("")
    rows = [
        [row.label, *(cell_text(c) for c in row.cells), " ".join(row.runnable_on) or "none"]
        for row in section.rows
    ]
    header = ["mode", *(section.keys[m.name] for m in section.machines), "can run on"]
    lines += _table(header, rows)
    lines += _reason_lines(section.reasons)
    return lines


def coverage_text(cov: Coverage) -> list[str]:
    return _coverage_lines(build(cov, None))


def modes_text(matrix: ModeMatrix) -> list[str]:
    return _modes_lines(build(None, matrix))


def text(cov: Coverage | None, matrix: ModeMatrix | None) -> str:
    """Both sections in the page's order (tests, then modes), reasons numbered across both."""
    view = build(cov, matrix)
    sections = []
    if view.tests is not None:
        sections.append("\n".join(_coverage_lines(view)))
    if view.modes is not None:
        sections.append("\n".join(_modes_lines(view)))
    return "\n\n".join(sections)

"""The merged fleet view as GitHub-flavoured Markdown, for ``$GITHUB_STEP_SUMMARY``.

A job summary has no colours, so each state has a symbol and its word; a cell that
cannot run names its reason's number, and the reasons follow the table once each.
"""

from __future__ import annotations

from pytest_gpuinfer.fleet.merge import Coverage, ModeMatrix
from pytest_gpuinfer.fleet.view import CellView, Reason, Section, View, build

SYMBOLS: dict[str, str] = {
    "passed": "✅",
    "xfailed": "✅",
    "failed": "❌",
    "error": "❌",
    "xpassed": "❌",
    "would run": "🔵",
    "cannot run": "🟠",
    "degraded": "🟡",
    "skipped": "⚪",
    "unknown": "❔",
    "not run": "⚪",
}


def escape(text: str) -> str:
    """Text safe in a table cell or a list item: no pipe, markup or HTML is interpreted."""
    out = []
    for char in text:
        if char in "\\`*_[]<>|#~":
            out.append("\\" + char)
        elif char == "\n":
            out.append(" ")
        else:
            out.append(char)
    return "".join(out)


def _code(text: str) -> str:
    """A node id as inline code; in a GFM table a pipe needs its backslash even there."""
    text = text.replace("|", "\\|").replace("\n", " ")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _cell(cell: CellView) -> str:
    if cell.state in ("not collected", "not judged"):
        return "–"
    symbol = SYMBOLS.get(cell.state, "")
    refs = "".join(f" [{n}]" for n in cell.refs)
    return f"{symbol} {escape(cell.shown)}{refs}".strip()


def _machines(section: Section) -> list[str]:
    lines = []
    for gpus, names in section.by_gpu:
        named = ", ".join(f"**{section.keys[n]}** {escape(n)}" for n in names)
        lines.append(f"- {escape(gpus)}: {named}")
    return lines


def _table(section: Section, first: str, last: str | None = None) -> list[str]:
    header = [first, *(section.keys[m.name] for m in section.machines)]
    if last:
        header.append(last)
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in section.rows:
        label = _code(row.label) if section.name == "tests" else escape(row.label)
        if section.name == "tests" and not row.ran and len(section.machines) > 1:
            label += " **(ran nowhere)**"
        cells = [label, *(_cell(c) for c in row.cells)]
        if last:
            cells.append(" ".join(row.runnable_on) or "none")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _legend(section: Section) -> list[str]:
    items = [
        f"{SYMBOLS.get(state, '–')} **{state}**: {escape(meaning)}"
        for state, meaning in section.legend
    ]
    return ["", "Legend: " + " · ".join(items)]


def _reasons(reasons: list[Reason]) -> list[str]:
    if not reasons:
        return []
    lines = ["", "**Reasons**", ""]
    for r in reasons:
        lines.append(f"- **[{r.number}]** {escape(r.text)} ({escape(r.where)})")
    return lines


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' if count != 1 else ''}"


def _counts(section: Section) -> str:
    """ "3 passed, 2 would run, 1 cannot run" over every cell."""
    counts: dict[str, int] = {}
    for row in section.rows:
        for cell in row.cells:
            counts[cell.state] = counts.get(cell.state, 0) + 1
    order = [state for state, _ in section.legend] + sorted(counts)
    shown = dict.fromkeys(s for s in order if counts.get(s))
    return ", ".join(f"{counts[s]} {s}" for s in shown)


def _section(view: View, section: Section) -> list[str]:
    if section.name == "tests" and len(section.machines) == 1:
        # One run: "ran nowhere" would only repeat each cell's own state.
        lines = [f"### {_plural(len(section.rows), 'test')}: {_counts(section)}"]
    elif section.name == "tests":
        lines = [
            f"### Tests x machines: {_plural(len(section.rows), 'test')} on "
            f"{_plural(len(section.machines), 'machine')}, {len(view.ran_nowhere)} ran on "
            "no machine",
        ]
    else:
        model = f" (model: {escape(view.model)})" if view.model else ""
        lines = [f"### Modes x machines{model}"]
    lines += ["", *_machines(section), ""]
    if section.name == "tests":
        lines += _table(section, "test")
    else:
        lines += _table(section, "mode", "can run on")
    lines += _legend(section)
    lines += _reasons(section.reasons)
    return lines


def markdown(
    cov: Coverage | None,
    matrix: ModeMatrix | None,
    *,
    title: str = "pytest-gpuinfer: fleet coverage",
    note: str | None = None,
) -> str:
    """The summary: a heading, each section's table, legend and reasons."""
    view = build(cov, matrix)
    lines = [f"## {escape(title)}", ""]
    if note:
        lines += [escape(note), ""]
    for section in (view.tests, view.modes):
        if section is not None:
            lines += _section(view, section)
            lines.append("")
    return "\n".join(lines) + "\n"

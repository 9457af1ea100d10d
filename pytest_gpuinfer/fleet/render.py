"""The merged fleet view as a text table and as one self-contained HTML page."""

from __future__ import annotations

import html
from collections import Counter

from pytest_gpuinfer.fleet.merge import Cell, Coverage, Machine, ModeMatrix, groups_by_gpu

_SHORT = {
    "passed": "pass",
    "failed": "FAIL",
    "error": "ERROR",
    "skipped": "skip",
    "xfailed": "xfail",
    "xpassed": "XPASS",
    "not collected": "-",
    "not run": "not run",
}


def _short(cell: Cell) -> str:
    return _SHORT.get(cell.outcome, cell.outcome)


def _keys(machines: list[Machine]) -> dict[str, str]:
    """Machine name -> short column key (M1, M2, ...)."""
    return {m.name: f"M{i}" for i, m in enumerate(machines, start=1)}


def _machine_lines(machines: list[Machine]) -> list[str]:
    keys = _keys(machines)
    lines = ["machines, by GPU:"]
    for gpus, names in groups_by_gpu(machines).items():
        lines.append(f"  {gpus}: " + ", ".join(f"{keys[n]} {n}" for n in names))
    return lines


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def coverage_text(cov: Coverage) -> list[str]:
    keys = _keys(cov.machines)
    lines = [f"coverage: {len(cov.tests)} tests x {len(cov.machines)} machines", ""]
    lines += _machine_lines(cov.machines)
    lines.append("")
    rows = [
        [
            t,
            *(
                _SHORT.get(cov.cell(t, m.name).outcome, cov.cell(t, m.name).outcome)
                for m in cov.machines
            ),
        ]
        for t in cov.tests
    ]
    lines += _table(["test", *(keys[m.name] for m in cov.machines)], rows)
    reasons: Counter[tuple[str, str]] = Counter()
    for t in cov.tests:
        for m in cov.machines:
            cell = cov.cell(t, m.name)
            if cell.outcome == "skipped" and cell.reason:
                reasons[(keys[m.name], cell.reason)] += 1
    if reasons:
        lines += ["", "skip reasons:"]
        for (key, reason), count in sorted(reasons.items(), key=lambda i: (i[0][0], -i[1])):
            lines.append(f"  {key} {count:>4} x {reason}")
    nowhere = cov.ran_nowhere
    lines += ["", f"ran on no machine: {len(nowhere)}"]
    lines += [f"  {t}" for t in nowhere]
    return lines


def _mode_cell(matrix: ModeMatrix, mode: str, machine: str) -> str:
    verdict = matrix.verdicts.get((mode, machine))
    if verdict is None:
        return "-"
    fit = matrix.fits.get((mode, machine))
    if fit is None:
        return verdict.outcome
    fits = "fits" if fit.outcome in ("supported", "degraded") else f"fit {fit.outcome}"
    return f"{verdict.outcome}, {fits}"


def modes_text(matrix: ModeMatrix) -> list[str]:
    keys = _keys(matrix.machines)
    model = f" (model: {', '.join(matrix.models)})" if matrix.models else ""
    lines = [f"modes: which machines can run each mode{model}", ""]
    lines += _machine_lines(matrix.machines)
    lines.append("")
    rows = [
        [
            mode,
            *(_mode_cell(matrix, mode, m.name) for m in matrix.machines),
            " ".join(keys[n] for n in matrix.runnable_on(mode)) or "none",
        ]
        for mode in matrix.modes
    ]
    lines += _table(["mode", *(keys[m.name] for m in matrix.machines), "can run on"], rows)
    return lines


# -- HTML -----------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.passed, td.supported, td.xfailed { background: #dff5df; }
td.failed, td.error, td.xpassed, td.unsupported { background: #f8d7d7; }
td.skipped, td.degraded, td.unknown { background: #fff3cd; }
td.not-collected { background: #eee; color: #888; }
td small { display: block; color: #555; max-width: 28em; }
code { font-size: 90%; }
"""


def _td(cell: Cell | None, text: str) -> str:
    outcome = cell.outcome if cell is not None else "not collected"
    css = outcome.replace(" ", "-")
    reason = f"<small>{html.escape(cell.reason)}</small>" if cell and cell.reason else ""
    return f'<td class="{html.escape(css)}">{html.escape(text)}{reason}</td>'


def _machines_html(machines: list[Machine]) -> str:
    keys = _keys(machines)
    items = []
    for gpus, names in groups_by_gpu(machines).items():
        named = ", ".join(f"<b>{keys[n]}</b> {html.escape(n)}" for n in names)
        items.append(f"<li>{html.escape(gpus)}: {named}</li>")
    return "<ul>" + "".join(items) + "</ul>"


def page(cov: Coverage | None, matrix: ModeMatrix | None) -> str:
    """One HTML page, no external resources."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>pytest-gpuinfer: fleet coverage</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>pytest-gpuinfer: fleet coverage</h1>",
    ]
    if cov is not None:
        keys = _keys(cov.machines)
        nowhere = cov.ran_nowhere
        parts.append(
            f"<h2>Tests x machines</h2><p>{len(cov.tests)} tests on {len(cov.machines)} "
            f"machines; {len(nowhere)} ran on no machine.</p>"
        )
        parts.append(_machines_html(cov.machines))
        head = "".join(
            f'<th title="{html.escape(m.name)}">{keys[m.name]}</th>' for m in cov.machines
        )
        parts.append(f"<table><tr><th>test</th>{head}</tr>")
        for t in cov.tests:
            ran = cov.ran_on(t)
            label = f"<code>{html.escape(t)}</code>" + ("" if ran else " <b>(ran nowhere)</b>")
            cells = "".join(
                _td(cov.cells.get((t, m.name)), _short(cov.cell(t, m.name))) for m in cov.machines
            )
            parts.append(f"<tr><td>{label}</td>{cells}</tr>")
        parts.append("</table>")
    if matrix is not None:
        keys = _keys(matrix.machines)
        model = f" (model: {html.escape(', '.join(matrix.models))})" if matrix.models else ""
        parts.append(f"<h2>Modes x machines{model}</h2>")
        parts.append(_machines_html(matrix.machines))
        head = "".join(
            f'<th title="{html.escape(m.name)}">{keys[m.name]}</th>' for m in matrix.machines
        )
        parts.append(f"<table><tr><th>mode</th>{head}<th>can run on</th></tr>")
        for mode in matrix.modes:
            cells = "".join(
                _td(matrix.verdicts.get((mode, m.name)), _mode_cell(matrix, mode, m.name))
                for m in matrix.machines
            )
            runnable = " ".join(keys[n] for n in matrix.runnable_on(mode)) or "none"
            parts.append(
                f"<tr><td>{html.escape(mode)}</td>{cells}<td>{html.escape(runnable)}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"

"""The merged fleet view as one self-contained HTML page (inline CSS, no script, no link
out).

Every cell is ``<td class="state state-<name>" data-state="<state>">``, its text the
state's word and, where it has one, a link to its numbered reason (``#reason-N``) listed
once below the table. Each state has its own colour, shown in the legend beside its
meaning; "would run" (a simulated profile meets the requirements) is blue, "cannot run"
(a requirement is unmet) orange. scripts/check_fleet_page.py checks a page in Chromium.
"""

from __future__ import annotations

import html

from pytest_gpuinfer.fleet.merge import Coverage, ModeMatrix
from pytest_gpuinfer.fleet.view import CellView, Reason, Section, View, build

STATE_COLOURS: dict[str, str] = {
    "passed": "#b7e4b7",
    "xfailed": "#b7e4b7",
    "failed": "#f4b6b6",
    "error": "#f4b6b6",
    "xpassed": "#f4b6b6",
    "would run": "#b9d7ff",
    "cannot run": "#ffcf8f",
    "degraded": "#fff0a0",
    "skipped": "#e2e2e2",
    "unknown": "#d9cdee",
    "not run": "#f2f2f2",
    "not collected": "#ffffff",
    "not judged": "#ffffff",
}
"""Each state's cell background; tests/test_fleet_page.py holds the states apart."""


def css_class(state: str) -> str:
    return "state-" + state.replace(" ", "-")


def _style() -> str:
    rules = "\n".join(
        f"td.{css_class(state)} {{ background: {colour}; }}"
        for state, colour in STATE_COLOURS.items()
    )
    return f"""
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #bbb; padding: 4px 8px; text-align: left; vertical-align: top; }}
th {{ background: #f4f4f4; }}
td.state {{ white-space: nowrap; }}
td.state-not-collected, td.state-not-judged {{ color: #888; }}
a.ref {{ color: #1a4f9c; font-size: 85%; margin-left: 0.3em; }}
ul.reasons {{ list-style: none; padding-left: 0; }}
ul.reasons li {{ margin: 0.4em 0; }}
ul.reasons .number {{ font-weight: bold; margin-right: 0.4em; }}
ul.reasons .where {{ display: block; color: #555; font-size: 90%; margin-left: 2em; }}
table.legend td {{ border: none; padding: 2px 8px; }}
table.legend td.state {{ border: 1px solid #bbb; min-width: 6em; }}
code {{ font-size: 90%; }}
{rules}
"""


def _td(cell: CellView) -> str:
    refs = "".join(
        f'<a class="ref" href="#reason-{n}" title="reason {n}">[{n}]</a>' for n in cell.refs
    )
    return (
        f'<td class="state {css_class(cell.state)}" data-state="{html.escape(cell.state)}">'
        f"{html.escape(cell.shown)}{refs}</td>"
    )


def _machines(section: Section) -> str:
    items = []
    for gpus, names in section.by_gpu:
        named = ", ".join(f"<b>{section.keys[n]}</b> {html.escape(n)}" for n in names)
        items.append(f"<li>{html.escape(gpus)}: {named}</li>")
    return '<ul class="machines">' + "".join(items) + "</ul>"


def _legend(section: Section) -> str:
    rows = "".join(
        f'<tr><td class="state {css_class(state)}" data-state="{html.escape(state)}">'
        f"{html.escape(state)}</td><td>{html.escape(meaning)}</td></tr>"
        for state, meaning in section.legend
    )
    return f'<table class="legend" id="legend-{section.name}">{rows}</table>'


def _reasons(reasons: list[Reason], section: str) -> str:
    if not reasons:
        return ""
    items = "".join(
        f'<li id="reason-{r.number}"><span class="number">[{r.number}]</span>'
        f'<span class="reason">{html.escape(r.text)}</span>'
        f'<span class="where">{html.escape(r.where)}</span></li>'
        for r in reasons
    )
    return f'<h3>Reasons</h3><ul class="reasons" id="reasons-{section}">{items}</ul>'


def _header(section: Section, first: str, extra: str = "") -> str:
    keys = "".join(
        f'<th title="{html.escape(m.name)}">{section.keys[m.name]}</th>' for m in section.machines
    )
    return f"<tr><th>{first}</th>{keys}{extra}</tr>"


def _tests_html(view: View) -> list[str]:
    section = view.tests
    assert section is not None
    parts = [
        "<h2>Tests x machines</h2>",
        f'<p class="counts">{len(section.rows)} tests on {len(section.machines)} machines; '
        f"{len(view.ran_nowhere)} ran on no machine.</p>",
        _machines(section),
        _legend(section),
        f'<table class="matrix" id="tests">{_header(section, "test")}',
    ]
    for row in section.rows:
        label = f"<code>{html.escape(row.label)}</code>"
        if not row.ran:
            label += ' <b class="nowhere">(ran nowhere)</b>'
        parts.append(f'<tr><td class="test">{label}</td>{"".join(map(_td, row.cells))}</tr>')
    parts.append("</table>")
    parts.append(_reasons(section.reasons, "tests"))
    return parts


def _modes_html(view: View) -> list[str]:
    section = view.modes
    assert section is not None
    model = f" (model: {html.escape(view.model)})" if view.model else ""
    parts = [
        f"<h2>Modes x machines{model}</h2>",
        _machines(section),
        _legend(section),
        f'<table class="matrix" id="modes">{_header(section, "mode", "<th>can run on</th>")}',
    ]
    for row in section.rows:
        runnable = " ".join(row.runnable_on) or "none"
        parts.append(
            f'<tr><td class="mode">{html.escape(row.label)}</td>{"".join(map(_td, row.cells))}'
            f'<td class="runnable">{html.escape(runnable)}</td></tr>'
        )
    parts.append("</table>")
    parts.append(_reasons(section.reasons, "modes"))
    return parts


def page(cov: Coverage | None, matrix: ModeMatrix | None) -> str:
    """One HTML page, no external resources."""
    view = build(cov, matrix)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>pytest-gpuinfer: fleet coverage</title>",
        f"<style>{_style()}</style></head><body>",
        "<h1>pytest-gpuinfer: fleet coverage</h1>",
    ]
    if view.tests is not None:
        parts += _tests_html(view)
    if view.modes is not None:
        parts += _modes_html(view)
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p) + "\n"

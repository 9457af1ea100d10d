"""The rows of the second public verdict table and the doc page rendered from them.

See ``test_public_cases.py`` for what the groups are and how a row is checked.
Regenerate ``docs/public-cases.md`` with ``PYTHONPATH=. python tests/public_cases.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from public_case_sources import GPU_FILES, VerdictCase
from public_cases_machine import CLOSED_WORLD, PLATFORM, PRECISION
from public_cases_stack import BNB_BINARIES, FASTPATH, FLOORS

GROUPS: tuple[tuple[str, tuple[VerdictCase, ...]], ...] = (
    ("Version floors between packages", FLOORS),
    ("bitsandbytes binaries", BNB_BINARIES),
    ("Fastpath", FASTPATH),
    ("Platform", PLATFORM),
    ("Closed world", CLOSED_WORLD),
    ("Precision per architecture", PRECISION),
)
CASES: tuple[VerdictCase, ...] = tuple(case for _, group in GROUPS for case in group)


DOC = Path(__file__).parents[1] / "docs" / "public-cases.md"


def _gpu(case: VerdictCase) -> str:
    name = case.profile.split("@")[0]
    return f"{name} (profile file)" if name in GPU_FILES else name


def _expected(case: VerdictCase) -> str:
    text = f"{case.status} (exit {case.exit_code}, strict {case.strict_exit_code})"
    return text + (", unconfirmed" if case.unsettled and case.status != "unknown" else "")


def render_markdown() -> str:
    """The doc page: one table per group, rendered from the data above."""
    lines = [
        "# Public verdict cases",
        "",
        "Rendered from `tests/public_cases*.py` (do not edit by hand: run",
        "`PYTHONPATH=. python tests/public_cases.py`). Each row is a simulated GPU with",
        "pinned package versions, the mode judged, the verdict the public source supports,",
        "and that source. GPUs marked *(profile file)* have no built-in profile; the test",
        "writes their profile (listed at the end) to a file.",
        "",
    ]
    for title, group in GROUPS:
        lines += [f"## {title} ({len(group)})", ""]
        lines += [
            "| GPU | stack | mode | expected | key fact | source |",
            "|---|---|---|---|---|---|",
        ]
        for case in group:
            stack = case.profile.partition("@")[2].replace(",", ", ")
            fact = f"`{case.reason_contains}`" if case.reason_contains else ""
            source = case.source.replace("|", "\\|")
            lines.append(
                f"| {_gpu(case)} | {stack} | {case.mode} | {_expected(case)} | {fact} | {source} |"
            )
        lines.append("")
    lines += ["## Profile files", "", "| name | profile |", "|---|---|"]
    for name, data in GPU_FILES.items():
        lines.append(f"| {name} | `{json.dumps(data, sort_keys=True)}` |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    DOC.write_text(render_markdown(), encoding="utf-8")
    sys.stdout.write(f"wrote {DOC} ({len(CASES)} cases)\n")

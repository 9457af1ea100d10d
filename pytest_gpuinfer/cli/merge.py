"""``gpuinfer merge REPORT...``: one coverage matrix from the reports of several machines.

Exit codes: 0 merged; 1 a test ran on no machine (``--no-fail-on-unrun`` turns that off);
2 bad input (one line naming the file and what was expected).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_UNRUN = 1


def add_parser(sub: Any) -> None:
    """Register ``merge`` on the ``gpuinfer`` subcommand parser."""
    merge = sub.add_parser(
        "merge",
        help="combine --gpuinfer-report / `audit --json` files from several machines",
        description=(
            "Combine the plugin's JSON reports (--gpuinfer-report) into a test x machine "
            "coverage matrix, and `gpuinfer audit --json` reports into which machines can "
            "run each mode. NAME=PATH names a machine."
        ),
    )
    merge.add_argument("reports", nargs="*", metavar="REPORT", help="report files (NAME=PATH)")
    merge.add_argument("--json", action="store_true", help="print the merged view as JSON")
    merge.add_argument("--html", metavar="FILE", help="also write one self-contained HTML page")
    merge.add_argument(
        "--markdown",
        metavar="FILE",
        help='also append a Markdown summary to FILE (e.g. "$GITHUB_STEP_SUMMARY")',
    )
    merge.add_argument(
        "--fail-on-unrun",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="exit 1 when a test ran on no machine (default: on)",
    )
    merge.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``gpuinfer merge``; InputError (exit 2 in cli.main) on bad input."""
    from pytest_gpuinfer.fleet.markdown import markdown
    from pytest_gpuinfer.fleet.merge import coverage, load, mode_matrix, split_argument, to_json
    from pytest_gpuinfer.fleet.page import page
    from pytest_gpuinfer.fleet.render import text
    from pytest_gpuinfer.outputs import Outputs, dumps_json, write_text

    html = summary = None
    if args.html is not None or args.markdown is not None:
        files = Outputs()
        for argument in args.reports:
            if argument.strip():
                files.add_input(split_argument(argument)[1], "report")
        if args.html is not None:
            html = files.add(args.html, "--html")
        if args.markdown is not None:
            summary = files.add(args.markdown, "--markdown")
    runs, audits = load(args.reports)
    cov = coverage(runs) if runs else None
    matrix = mode_matrix(audits) if audits else None
    if html is not None:
        write_text(html, page(cov, matrix), what="--html")
    if summary is not None:
        # Appended: $GITHUB_STEP_SUMMARY collects what each command of a step adds.
        _append(summary, markdown(cov, matrix))
    if args.json:
        print(dumps_json(to_json(cov, matrix)))
    else:
        print(text(cov, matrix))
    if cov is not None and cov.ran_nowhere and args.fail_on_unrun:
        return EXIT_UNRUN
    return EXIT_OK


def _append(path: Path, content: str) -> None:
    from pytest_gpuinfer.probes.errors import InputError

    try:
        with path.open("a", encoding="utf-8") as stream:
            stream.write(content)
    except OSError as error:
        raise InputError(f"cannot write {path}: {error.strerror}") from None

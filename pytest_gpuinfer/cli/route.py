"""``gpuinfer route EXPORT LABEL=RUNNER...``: one subset of tests per CI runner, and the matrix.

Writes ``OUT/<label>.txt`` (node ids, one a line, for ``pytest @OUT/t4.txt``) and
``OUT/routing.json`` (schema ``pytest-gpuinfer/routing`` 1), and prints
GitHub Actions' matrix JSON ``{"include": [{"runner": "t4", "tests": 12}, ...]}`` (a
runner that gets no test is left out). Tests no runner can run are listed on stderr.

Exit codes: 0 routed; 1 some test fits no runner and ``--fail-on-unroutable`` was given;
2 bad input (one line naming it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_gpuinfer.probes.report import Report

EXIT_OK = 0
EXIT_UNROUTABLE = 1


def add_parser(sub: Any) -> None:
    """Register ``route`` on the ``gpuinfer`` subcommand parser."""
    route = sub.add_parser(
        "route",
        help="split a --gpuinfer-requirements export into one test subset per CI runner",
    )
    route.add_argument("export", help="the --gpuinfer-requirements JSON")
    route.add_argument("runners", nargs="+", metavar="LABEL=PROFILE|AUDIT.json")
    route.add_argument("--out", default="subsets", help="directory for <label>.txt files")
    route.add_argument("--fail-on-unroutable", action="store_true")
    route.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``gpuinfer route``; InputError (exit 2 in cli.main) on bad input."""
    from pytest_gpuinfer.fleet.export import load_export
    from pytest_gpuinfer.fleet.route import route, runner_report
    from pytest_gpuinfer.probes.errors import InputError

    export = load_export(Path(args.export))
    runners: dict[str, Report] = {}
    for item in args.runners:
        label, sep, spec = item.partition("=")
        if not sep or not label or not spec:
            raise InputError(f"runner {item!r} is not LABEL=PROFILE or LABEL=AUDIT.json")
        runners[label] = runner_report(spec)
    routing = route(export, runners)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for label, nodeids in routing.subsets.items():
            (out / f"{label}.txt").write_text("".join(f"{n}\n" for n in nodeids), encoding="utf-8")
        (out / "routing.json").write_text(json.dumps(routing.to_dict(), indent=2), encoding="utf-8")
    except OSError as error:
        raise InputError(f"cannot write into {out}: {error.strerror}") from None
    # GitHub's matrix takes no other keys: the stamped record is routing.json beside it.
    print(json.dumps(routing.matrix()))
    for nodeid, reasons in routing.unroutable.items():
        print(f"no runner for {nodeid}: {' | '.join(reasons)}", file=sys.stderr)
    return EXIT_UNROUTABLE if routing.unroutable and args.fail_on_unroutable else EXIT_OK

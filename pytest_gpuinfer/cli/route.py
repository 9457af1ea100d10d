"""``gpuinfer route EXPORT LABEL=RUNNER...``: one subset of tests per CI runner, and the matrix.

Writes ``OUT/<label>.txt`` (node ids, one a line, for ``pytest @OUT/t4.txt``) and
``OUT/routing.json`` (schema ``pytest-gpuinfer/routing`` 1), and prints GitHub Actions'
matrix JSON ``{"include": [{"runner": "t4", "runs-on": "t4", "tests": 12}, ...]}`` (a
runner that gets no test is left out; ``runs-on`` is one label, ``--runs-on`` renames it).
Tests no runner can run are listed on stderr. A runner is ``LABEL=cpu``, ``LABEL=PROFILE``
or ``LABEL=AUDIT.json`` (positional, or ``--runner``); a bare ``cpu`` is ``cpu=cpu``.

Exit codes: 0 routed; 1 some test fits no runner and ``--fail-on-unroutable`` was given;
2 bad input (one line naming it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_UNROUTABLE = 1


def add_parser(sub: Any) -> None:
    """Register ``route`` on the ``gpuinfer`` subcommand parser."""
    route = sub.add_parser(
        "route",
        help="split a --gpuinfer-requirements export into one test subset per CI runner",
    )
    route.add_argument("export", help="the --gpuinfer-requirements JSON")
    route.add_argument("runners", nargs="*", metavar="LABEL=PROFILE|AUDIT.json|cpu")
    route.add_argument(
        "--runner",
        dest="runner_options",
        action="append",
        default=[],
        metavar="LABEL=SPEC",
        help="one more runner, e.g. --runner t4=ci/runners/t4.json (its committed audit)",
    )
    route.add_argument(
        "--runs-on",
        action="append",
        default=[],
        metavar="LABEL=RUNNER_LABEL",
        help="the single runs-on label of a runner class in the matrix (default: LABEL)",
    )
    route.add_argument("--out", default="subsets", help="directory for <label>.txt files")
    route.add_argument("--fail-on-unroutable", action="store_true")
    route.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``gpuinfer route``; InputError (exit 2 in cli.main) on bad input."""
    from pytest_gpuinfer.fleet.export import load_export
    from pytest_gpuinfer.fleet.route import CPU, Runner, route, runner_from_spec
    from pytest_gpuinfer.probes.errors import InputError

    export = load_export(Path(args.export))
    items = [*args.runners, *args.runner_options]
    if not items:
        raise InputError("no runner given; expected LABEL=PROFILE, LABEL=AUDIT.json or cpu")
    runners: dict[str, Runner] = {}
    for item in items:
        label, sep, spec = item.partition("=")
        if not sep and item.strip().lower() == CPU:
            label, spec = CPU, CPU
        elif not sep or not label or not spec:
            raise InputError(f"runner {item!r} is not LABEL=PROFILE or LABEL=AUDIT.json")
        runners[label] = runner_from_spec(spec)
    runs_on: dict[str, str] = {}
    for item in args.runs_on:
        label, sep, name = item.partition("=")
        if not sep or label not in runners or not name.strip():
            raise InputError(
                f"--runs-on {item!r} is not LABEL=RUNNER_LABEL for a given runner "
                f"(runners: {', '.join(runners)})"
            )
        runs_on[label] = name.strip()
    routing = route(export, runners, runs_on)
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

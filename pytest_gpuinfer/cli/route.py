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
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_gpuinfer.probes.errors import InputError

if TYPE_CHECKING:
    pass

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


LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
"""A runner label: also a file name (``OUT/<label>.txt``), so nothing a path could misread."""


def check_label(label: str, item: str) -> str:
    """``label`` if it is a safe file name; InputError naming the runner otherwise."""
    if not LABEL.fullmatch(label) or ".." in label:
        raise InputError(
            f"runner label {label!r} (in {item!r}) is not a plain name: expected letters, "
            "digits, '_', '-', '+' or '.', starting with a letter or digit (it names "
            f"<label>.txt), at most {64} characters"
        )
    return label


def parse_runners(items: list[str]) -> dict[str, str]:
    """``LABEL=SPEC`` arguments -> {label: spec}; InputError for a bad or repeated label."""
    runners: dict[str, str] = {}
    seen: dict[str, str] = {}
    for item in items:
        label, sep, spec = item.partition("=")
        if not sep and item.strip().lower() == "cpu":
            label, spec = "cpu", "cpu"
        elif not sep or not label or not spec.strip():
            raise InputError(f"runner {item!r} is not LABEL=PROFILE, LABEL=AUDIT.json or cpu")
        check_label(label, item)
        # Case-blind: on a case-insensitive file system T4.txt and t4.txt are one file.
        earlier = seen.get(label.casefold())
        if earlier is not None:
            raise InputError(
                f"runner label {label!r} is given twice ({earlier!r} and {item!r}): each "
                "runner needs its own label, which names its <label>.txt"
            )
        seen[label.casefold()] = item
        runners[label] = spec
    return runners


def run(args: argparse.Namespace) -> int:
    """Run ``gpuinfer route``; InputError (exit 2 in cli.main) on bad input."""
    from pytest_gpuinfer.fleet.export import load_export
    from pytest_gpuinfer.fleet.route import Runner, route, runner_from_spec
    from pytest_gpuinfer.outputs import Outputs, dumps_json, write_json, write_text

    if not args.export.strip():
        raise InputError("the export path is empty: expected a --gpuinfer-requirements file")
    items = [*args.runners, *args.runner_options]
    if not items:
        raise InputError("no runner given; expected LABEL=PROFILE, LABEL=AUDIT.json or cpu")
    specs = parse_runners(items)
    if not args.out.strip():
        raise InputError("--out is empty: expected a directory for <label>.txt files")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {args.out!r} is a file: expected a directory (it may not exist)")
    export = load_export(Path(args.export))
    runners: dict[str, Runner] = {label: runner_from_spec(spec) for label, spec in specs.items()}
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
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot make --out {args.out!r}: {error.strerror}") from None
    inputs = [(args.export, "export")]
    inputs += [(spec, "runner") for spec in specs.values() if Path(spec).is_file()]
    files = Outputs(inputs)
    subsets = {
        label: files.add(out / f"{label}.txt", f"runner {label!r}'s subset")
        for label in routing.subsets
    }
    record = files.add(out / "routing.json", "routing.json")
    matrix = dumps_json(routing.matrix(), indent=None)
    for label, nodeids in routing.subsets.items():
        write_text(subsets[label], "".join(f"{n}\n" for n in nodeids))
    write_json(record, routing.to_dict())
    # GitHub's matrix takes no other keys: the stamped record is routing.json beside it.
    print(matrix)
    for nodeid, reasons in routing.unroutable.items():
        print(f"no runner for {nodeid}: {' | '.join(reasons)}", file=sys.stderr)
    return EXIT_UNROUTABLE if routing.unroutable and args.fail_on_unroutable else EXIT_OK

"""Route exported tests to CI runners: each test to the first runner whose hardware meets it.

A runner is described by a built-in profile name, a profile file, or the JSON of
``gpuinfer audit --json`` captured on it. Used by docs/fleet.md's GitHub Actions example:

    python -m pytest_gpuinfer.merge_route requirements.json t4=t4 a100=a100-80gb --out subsets

writes ``subsets/<runner>.txt`` (node ids, one a line, for ``pytest @subsets/t4.txt``) and
prints the matrix JSON ``{"include": [{"runner": "t4", "tests": 12}, ...]}``. Tests no
runner can run are listed on stderr; ``--fail-on-unroutable`` makes them exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_gpuinfer.probes.report import Report


@dataclass
class Routing:
    subsets: dict[str, list[str]]
    """Runner label -> node ids it runs (every label present, maybe empty)."""
    unroutable: dict[str, list[str]]
    """Node id -> why each runner cannot run it."""


def runner_report(spec: str) -> Report:
    """A runner's hardware: an audit JSON file, or a profile (name or file)."""
    from pytest_gpuinfer.probes import probe
    from pytest_gpuinfer.probes.errors import InputError
    from pytest_gpuinfer.probes.report import Report as ReportClass

    path = Path(spec)
    if path.suffix == ".json" and path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and "verdicts" in data:
                return ReportClass.from_dict(data)
        except ValueError:
            pass
    try:
        return probe(profile=spec)
    except InputError as error:
        raise InputError(f"runner {spec!r}: {error}") from None


def route(export: Mapping[str, Any], runners: Mapping[str, Report]) -> Routing:
    """Each test to the first runner (in the given order) where nothing it asks for fails."""
    from pytest_gpuinfer.requirements_check import evaluate
    from pytest_gpuinfer.requirements_export import requirements_of_record

    subsets: dict[str, list[str]] = {label: [] for label in runners}
    unroutable: dict[str, list[str]] = {}
    for record in export.get("tests", []):
        requirements = requirements_of_record(record)
        reasons: list[str] = []
        for label, report in runners.items():
            why = evaluate(requirements, report, mode=record.get("mode"))
            if not why:
                subsets[label].append(str(record["nodeid"]))
                break
            reasons.append(f"{label}: {'; '.join(why)}")
        else:
            unroutable[str(record["nodeid"])] = reasons
    return Routing(subsets, unroutable)


def main(argv: Sequence[str] | None = None) -> int:
    from pytest_gpuinfer.probes.errors import InputError
    from pytest_gpuinfer.requirements_export import load_export

    parser = argparse.ArgumentParser(prog="python -m pytest_gpuinfer.merge_route")
    parser.add_argument("export", help="the --gpuinfer-requirements JSON")
    parser.add_argument("runners", nargs="+", metavar="LABEL=PROFILE|AUDIT.json")
    parser.add_argument("--out", default="subsets", help="directory for <label>.txt files")
    parser.add_argument("--fail-on-unroutable", action="store_true")
    args = parser.parse_args(argv)
    try:
        export = load_export(Path(args.export))
        runners: dict[str, Report] = {}
        for item in args.runners:
            label, sep, spec = item.partition("=")
            if not sep or not label or not spec:
                raise InputError(f"runner {item!r} is not LABEL=PROFILE or LABEL=AUDIT.json")
            runners[label] = runner_report(spec)
    except InputError as error:
        print(f"merge_route: error: {error}", file=sys.stderr)
        return 2
    routing = route(export, runners)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for label, nodeids in routing.subsets.items():
        (out / f"{label}.txt").write_text("".join(f"{n}\n" for n in nodeids), encoding="utf-8")
    include = [{"runner": k, "tests": len(v)} for k, v in routing.subsets.items() if v]
    print(json.dumps({"include": include}))
    for nodeid, reasons in routing.unroutable.items():
        print(f"no runner for {nodeid}: {' | '.join(reasons)}", file=sys.stderr)
    return 1 if routing.unroutable and args.fail_on_unroutable else 0


if __name__ == "__main__":
    raise SystemExit(main())

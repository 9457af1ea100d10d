"""``gpuinfer export REQUIREMENTS --format k8s|dra|slurm|ray|github``: a scheduler's spelling.

Reads a ``--gpuinfer-requirements`` export (schema ``pytest-gpuinfer/requirements``),
optionally narrowed to one routed subset (``--subset subsets/t4.txt``), and prints what the
scheduler takes (``pytest_gpuinfer.fleet.scheduler``): YAML for Kubernetes and DRA,
``#SBATCH`` lines, a ``@ray.remote`` line, GitHub's matrix JSON. These are the schedulers'
own formats, so they carry no ``schema`` stamp (like ``gpuinfer route``'s matrix); what
they were made from goes to stderr.

Exit codes: 0 printed; 1 no profile can run the selected GPU tests; 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    """Register ``export`` on the ``gpuinfer`` subcommand parser."""
    from pytest_gpuinfer.fleet.scheduler import FORMATS

    export = sub.add_parser(
        "export",
        help="the requirements as a Kubernetes/DRA/SLURM/Ray/GitHub selector",
    )
    export.add_argument("export", help="the --gpuinfer-requirements JSON")
    export.add_argument("--format", required=True, choices=FORMATS, dest="target")
    export.add_argument(
        "--subset",
        metavar="FILE",
        help="only the node ids in FILE (one a line, as `gpuinfer route` writes them)",
    )
    export.add_argument(
        "--profile",
        action="append",
        default=[],
        metavar="NAME|FILE",
        help="judge these profiles instead of every built-in one (repeatable)",
    )
    export.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pytest_gpuinfer.fleet.export import load_export
    from pytest_gpuinfer.fleet.scheduler import render, suite_need, summary
    from pytest_gpuinfer.probes.errors import InputError
    from pytest_gpuinfer.probes.profiles import BUILTIN_PROFILES, load_profile
    from pytest_gpuinfer.probes.software import probe_software

    export = load_export(Path(args.export))
    nodeids = None
    if args.subset is not None:
        try:
            text = Path(args.subset).read_text(encoding="utf-8")
        except OSError as error:
            raise InputError(f"cannot read --subset {args.subset}: {error.strerror}") from None
        nodeids = {line.strip() for line in text.splitlines() if line.strip()}
    profiles = (
        [load_profile(spec) for spec in args.profile]
        if args.profile
        else list(BUILTIN_PROFILES.values())
    )
    need = suite_need(export, profiles, probe_software().packages, nodeids)
    for line in summary(need):
        print(line, file=sys.stderr)
    if need.gpu_tests == 0:
        print("no selected test needs a GPU: nothing to schedule on one", file=sys.stderr)
        return 0
    if not need.eligible:
        return 1
    print(render(need, args.target))
    return 0

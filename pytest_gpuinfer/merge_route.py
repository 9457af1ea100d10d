"""Deprecated: ``python -m pytest_gpuinfer.merge_route`` is ``gpuinfer route`` now."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from pytest_gpuinfer.cli.main import main as gpuinfer

    print("merge_route: deprecated: use `gpuinfer route` (same arguments)", file=sys.stderr)
    return gpuinfer(["route", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())

"""Collection cost of pytest-gpuinfer: ``pytest --collect-only -q`` on 2,000 generated tests.

Three configurations, run interleaved so drift hits them alike, median of ``--runs``:

- ``baseline``: ``-p no:gpuinfer`` (the plugin not loaded at all);
- ``dormant``: installed but not enabled (registers its marker only);
- ``enabled``: ``--gpuinfer`` (probe, header, marker validation, mode parametrization).

Targets: dormant / baseline <= 1.01, enabled / baseline <= 1.05. Run:
``python benchmarks/bench_collect.py [--runs 7] [--tests 2000]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGURATIONS: dict[str, list[str]] = {
    "baseline": ["-p", "no:gpuinfer"],
    "dormant": [],
    "enabled": ["--gpuinfer"],
}

TARGETS = {"dormant": 1.01, "enabled": 1.05}


def write_suite(root: Path, tests: int, per_module: int = 50) -> None:
    """``tests`` tests: a quarter carry a gpuinfer mark, like a GPU-heavy downstream suite."""
    (root / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    for module in range(tests // per_module):
        lines = ["import pytest", ""]
        for i in range(per_module):
            if i % 4 == 0:
                lines.append(
                    '@pytest.mark.gpuinfer(compute_capability=">=7.5", free_memory="1GiB")'
                )
            lines.append(f"def test_{i}():\n    pass\n")
        (root / f"test_module_{module:03d}.py").write_text("\n".join(lines))


def collect_seconds(root: Path, extra: list[str], pycache: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one ``pytest --collect-only -q`` child process."""
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUINFER")}
    # Measure an installed plugin as users run it: with bytecode caches (kept out of the tree).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    completed = subprocess.run(
        command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{completed.stdout[-2000:]}")
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--tests", type=int, default=2000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gpuinfer-bench-") as directory:
        root = Path(directory) / "suite"
        root.mkdir()
        pycache = Path(directory) / "pycache"
        write_suite(root, args.tests)
        for extra in CONFIGURATIONS.values():  # warm the import and bytecode caches
            collect_seconds(root, extra, pycache)
        walls: dict[str, list[float]] = {name: [] for name in CONFIGURATIONS}
        cpus: dict[str, list[float]] = {name: [] for name in CONFIGURATIONS}
        for _ in range(args.runs):
            for name, extra in CONFIGURATIONS.items():
                wall, cpu = collect_seconds(root, extra, pycache)
                walls[name].append(wall)
                cpus[name].append(cpu)
    print(
        f"pytest --collect-only -q, {args.tests} tests, median of {args.runs} interleaved runs "
        "(wall clock, and CPU time of the pytest process)"
    )
    failed = False
    for label, samples in (("wall", walls), ("cpu", cpus)):
        medians = {name: statistics.median(values) for name, values in samples.items()}
        baseline = medians["baseline"]
        for name, median in medians.items():
            ratio = median / baseline
            target = TARGETS.get(name)
            verdict = ""
            if target is not None:
                ok = ratio <= target
                failed |= not ok
                verdict = f"  target <= {target:.2f}: {'met' if ok else 'MISSED'}"
            spread = f"min {min(samples[name]):.3f} max {max(samples[name]):.3f}"
            print(f"{label:>4} {name:>9}: {median:.3f} s  ratio {ratio:.3f}  [{spread}]{verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

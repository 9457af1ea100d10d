"""What the enabled plugin costs a collection: ``pytest --co -q`` on a 500-test suite,
dormant vs ``--gpuinfer``, side by side.

Each repetition runs both in fresh child processes, interleaved so drift hits them alike;
the medians and their ratio are printed (target: enabled / dormant <= 1.05). The suite
uses the marker, ``inference_mode`` and ``load_model`` like a downstream GPU suite, so
enabled collection validates every mark; nothing loads a model. The tests name their
modes themselves, so both configurations collect the same items (otherwise the enabled
run would parametrize, and collect, more tests than the dormant one). Run:
``python benchmarks/bench_plugin_overhead.py [--runs 9] [--tests 500]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET = 1.05
CONFIGURATIONS: dict[str, list[str]] = {"dormant": [], "enabled": ["--gpuinfer"]}

MODULE = """import pytest

@pytest.mark.gpuinfer(compute_capability=">=7.5", free_memory="1GiB")
def test_marked_{i}():
    pass

@pytest.mark.gpuinfer(modes=["fp16", "int8"])
@pytest.mark.parametrize("inference_mode", ["fp16", "int8"], indirect=True)
def test_modes_{i}(inference_mode):
    pass

def test_loads_{i}(load_model):
    pass

def test_plain_{i}():
    pass
"""
TESTS_PER_MODULE = 5


def write_suite(root: Path, tests: int) -> None:
    (root / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    for module in range(max(1, tests // TESTS_PER_MODULE)):
        (root / f"test_module_{module:03d}.py").write_text(MODULE.format(i=module))


def collect_seconds(root: Path, extra: list[str], pycache: Path) -> float:
    """Wall seconds of one ``pytest --co -q`` child process."""
    command = [sys.executable, "-m", "pytest", "--co", "-q", *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUINFER")}
    # Measured as users run an installed plugin: with bytecode caches, kept out of the tree.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    started = time.perf_counter()
    completed = subprocess.run(
        command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{completed.stdout[-2000:]}")
    return wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--tests", type=int, default=500)
    args = parser.parse_args(argv)
    samples: dict[str, list[float]] = {name: [] for name in CONFIGURATIONS}
    with tempfile.TemporaryDirectory(prefix="gpuinfer-overhead-") as directory:
        root = Path(directory) / "suite"
        root.mkdir()
        pycache = Path(directory) / "pycache"
        write_suite(root, args.tests)
        for extra in CONFIGURATIONS.values():  # warm the bytecode and file caches
            collect_seconds(root, extra, pycache)
        for _ in range(args.runs):
            for name, extra in CONFIGURATIONS.items():
                samples[name].append(collect_seconds(root, extra, pycache))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    ratio = medians["enabled"] / medians["dormant"]
    print(f"pytest --co -q, {args.tests} tests, median of {args.runs} interleaved runs (wall)")
    print(f"{'':>8}  {'median':>8}  {'min':>8}  {'max':>8}")
    for name, values in samples.items():
        print(f"{name:>8}  {medians[name]:8.3f}  {min(values):8.3f}  {max(values):8.3f}")
    verdict = "met" if ratio <= TARGET else "MISSED"
    print(f"enabled / dormant = {ratio:.3f} (target <= {TARGET:.2f}: {verdict})")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())

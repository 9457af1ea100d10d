"""How long `gpuinfer audit` and the probe take, beside the peers' environment reports.

Targets (issue 2): audit without a model <= 0.5 s median wall time; the probe itself
(NVML plus metadata) <= 50 ms. Every command runs in a fresh process, interleaved, so
the figures are side by side in one run.

    python benchmarks/bench_audit.py --runs 7 [--peers]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

PROBE_TIMING = (
    "import time; t0 = time.perf_counter(); from pytest_gpuinfer import probes; "
    "import pytest_gpuinfer.probes.rules, pytest_gpuinfer.probes.software, "
    "pytest_gpuinfer.probes.nvml, pynvml, importlib.metadata; t1 = time.perf_counter(); "
    "probes.probe(); "
    "t2 = time.perf_counter(); probes.probe(); t3 = time.perf_counter(); "
    "print(f'{(t1 - t0) * 1000:.2f} {(t2 - t1) * 1000:.2f} {(t3 - t2) * 1000:.2f}')"
)


def _wall(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=False)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--peers", action="store_true", help="also time accelerate env & co")
    args = parser.parse_args()

    commands: dict[str, list[str]] = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "gpuinfer audit": [sys.executable, "-m", "pytest_gpuinfer.cli", "audit"],
        "gpuinfer audit --json": [sys.executable, "-m", "pytest_gpuinfer.cli", "audit", "--json"],
    }
    script = shutil.which("gpuinfer")
    if script:
        commands["gpuinfer audit (console script)"] = [script, "audit"]
    peers: dict[str, list[str]] = {}
    if args.peers:
        for name, argv in {
            "accelerate env": ["accelerate", "env"],
            "transformers env": ["transformers", "env"],
            "python -m torch.utils.collect_env": [sys.executable, "-m", "torch.utils.collect_env"],
        }.items():
            if shutil.which(argv[0]) or argv[0] == sys.executable:
                peers[name] = argv
    timings: dict[str, list[float]] = {name: [] for name in {**commands, **peers}}
    imports: list[float] = []
    probe_cold: list[float] = []
    probe_warm: list[float] = []
    for run in range(args.runs):
        for name, argv in commands.items():
            timings[name].append(_wall(argv))
        out = subprocess.run(
            [sys.executable, "-c", PROBE_TIMING], capture_output=True, text=True, check=True
        ).stdout.split()
        imports.append(float(out[0]))
        probe_cold.append(float(out[1]))
        probe_warm.append(float(out[2]))
        if run == 0:  # peers are slow: once is enough to compare
            for name, argv in peers.items():
                timings[name].append(_wall(argv))

    baseline = statistics.median(timings["python -c pass"])
    audit = statistics.median(timings["gpuinfer audit"])
    print(f"{'command':<36}{'median s':>10}{'runs':>6}{'x audit':>9}")
    for name, values in timings.items():
        median = statistics.median(values)
        print(f"{name:<36}{median:>10.3f}{len(values):>6}{median / audit:>9.2f}")
    print(f"{'imports before a probe (ms)':<36}{statistics.median(imports):>10.2f}")
    print(f"{'first probe() after imports (ms)':<36}{statistics.median(probe_cold):>10.2f}")
    print(f"{'probe() again, same process (ms)':<36}{statistics.median(probe_warm):>10.2f}")
    verdict = "meets" if audit <= 0.5 else "MISSES"
    print(
        f"audit median {audit:.3f} s ({audit - baseline:.3f} s above a bare interpreter): "
        f"{verdict} the 0.5 s target; probe {statistics.median(probe_cold):.1f} ms (target 50)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

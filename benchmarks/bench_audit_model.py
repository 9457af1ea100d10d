"""`gpuinfer audit --model <local checkpoint>` beside `gpuinfer audit`, in fresh processes.

Target (issue 10): with a local safetensors checkpoint, the audit takes at most 2x the
audit without a model (median wall time): the weights come from the safetensors headers
and the workload from arithmetic, so neither torch nor transformers is imported. The
commands run interleaved, each in a fresh process, so the figures are side by side.

    python benchmarks/bench_audit_model.py --runs 7
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_RATIO = 2.0

LLAMA_22_LAYERS = {
    "hidden_size": 256,
    "intermediate_size": 704,
    "num_hidden_layers": 22,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
}
"""TinyLlama's layer count (as many header entries as the 1.1B model) at a small width."""


def _wall(argv: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, check=False)
    return time.perf_counter() - started, done.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    from pytest_gpuinfer.tiny_models import write_tiny_model

    audit = [sys.executable, "-m", "pytest_gpuinfer.cli", "audit", "--profile", "h100"]
    with tempfile.TemporaryDirectory() as tmp:
        tiny = write_tiny_model("llama", Path(tmp) / "tiny")
        wide = write_tiny_model("llama", Path(tmp) / "llama22", config_overrides=LLAMA_22_LAYERS)
        commands = {
            "audit (no model)": audit,
            "audit --model tiny llama": [*audit, "--model", str(tiny)],
            "audit --model 22-layer llama": [*audit, "--model", str(wide)],
            "audit --model 22-layer, workload": [
                *audit, "--model", str(wide), "--batch-size", "8", "--seq-len", "2048",
            ],
        }  # fmt: skip
        timings: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, argv in commands.items():
                seconds, code = _wall(argv)
                if code not in (0, 1):
                    print(f"{name}: exit {code}")
                    return 1
                timings[name].append(seconds)
    base = statistics.median(timings["audit (no model)"])
    print(f"{'command':<36}{'median s':>10}{'runs':>6}{'x audit':>9}")
    worst = 0.0
    for name, values in timings.items():
        median = statistics.median(values)
        worst = max(worst, median / base)
        print(f"{name:<36}{median:>10.3f}{len(values):>6}{median / base:>9.2f}")
    verdict = "meets" if worst <= TARGET_RATIO else "MISSES"
    print(
        f"worst ratio {worst:.2f}x the audit without a model: {verdict} the {TARGET_RATIO}x target"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

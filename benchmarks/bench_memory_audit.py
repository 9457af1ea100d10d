"""`gpuinfer audit --model` of a modelled and an unmodelled type, beside `gpuinfer audit`.

Target (issue 16): the audit of a model type without a workload model stays within 2x
the audit without a model (median wall time). Its checkpoint's safetensors headers give
the weights and its config the shapes, so neither torch nor transformers is imported
(before: a meta-device build, 9-12 s). Each command runs in a fresh process, interleaved,
so the figures are side by side:

    python benchmarks/bench_memory_audit.py --runs 5
    python benchmarks/bench_memory_audit.py --runs 5 --pythonpath /tmp/old-tree   # another tree

The checkpoints are header-only (sparse safetensors, ``memory_recheck.write_header_model``):
Mixtral (modelled, 12 layers, 8 experts, top-2) and DeepSeek-V3-shaped (unmodelled: MLA
attention, shared + routed experts), each about 1.2B parameters.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

TARGET_RATIO = 2.0

DEEPSEEK_V3 = {
    "model_type": "deepseek_v3", "hidden_size": 1024, "intermediate_size": 3584,
    "moe_intermediate_size": 896, "num_hidden_layers": 12, "num_attention_heads": 16,
    "num_key_value_heads": 16, "n_routed_experts": 16, "n_shared_experts": 1,
    "num_experts_per_tok": 4, "first_k_dense_replace": 1, "n_group": 4, "topk_group": 2,
    "kv_lora_rank": 256, "q_lora_rank": 384, "qk_rope_head_dim": 32, "qk_nope_head_dim": 64,
    "v_head_dim": 64, "vocab_size": 32000, "max_position_embeddings": 8320,
}  # fmt: skip
"""An unmodelled type whose config states every size (DeepSeek-V3 layout, small)."""


def _wall(argv: list[str], env: dict[str, str], cwd: str) -> tuple[float, int, str]:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=env, cwd=cwd)
    return time.perf_counter() - started, done.returncode, done.stdout + done.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pythonpath", help="run the audits from this source tree")
    args = parser.parse_args()
    from gpu_memory_validation import ARCHITECTURES
    from memory_recheck import write_header_model

    # Run from a neutral directory so PYTHONPATH alone picks the tree (``-m`` would put
    # the working directory first).
    root = args.pythonpath or str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root}
    audit = [sys.executable, "-m", "pytest_gpuinfer.cli", "audit", "--profile", "h100"]
    with tempfile.TemporaryDirectory() as tmp:
        modelled = write_header_model(Path(tmp) / "mixtral", ARCHITECTURES["mixtral-moe"])
        unmodelled = write_header_model(Path(tmp) / "deepseek", DEEPSEEK_V3)
        commands = {
            "audit (no model)": audit,
            "audit --model mixtral (modelled)": [*audit, "--model", str(modelled)],
            "audit --model deepseek_v3 (unmodelled)": [*audit, "--model", str(unmodelled)],
        }
        timings: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, argv in commands.items():
                seconds, code, output = _wall(argv, env, tmp)
                if code not in (0, 1):
                    print(f"{name}: exit {code}: {output.strip().splitlines()[-1:]}")
                    return 1
                timings[name].append(seconds)
    base = statistics.median(timings["audit (no model)"])
    print(f"{'command':<42}{'median s':>10}{'runs':>6}{'x audit':>9}")
    worst = 0.0
    for name, values in timings.items():
        median = statistics.median(values)
        worst = max(worst, median / base)
        print(f"{name:<42}{median:>10.3f}{len(values):>6}{median / base:>9.2f}")
    verdict = "meets" if worst <= TARGET_RATIO else "MISSES"
    print(
        f"worst ratio {worst:.2f}x the audit without a model: {verdict} the {TARGET_RATIO}x target"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""fp16 vs int8 vs nf4 vs fastpath on a 1.1B Llama-shaped model, through our own loader.

For the GPU machine: writes a random 1.1B Llama-shaped model (22 layers, hidden 2048,
GQA 32/4) to a directory, loads it with ``pytest_gpuinfer.loading.load_model`` in each
mode, and measures footprint, load time, prefill time (8x1024 tokens, median of 5 with
CUDA events), logits agreement against the fp16 eager reference, and greedy generation
closeness; then the shipped trained tiny LM's exact continuation per mode. Prints a
table last and writes JSON to ``--out``.

    python benchmarks/gpu_modes.py --out $OUT/gpu_modes.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _write_llama(directory: Path) -> Path:
    from pytest_gpuinfer.tiny_models import TINYLLAMA_1B, write_tiny_model

    return write_tiny_model("llama", directory, dtype="float16", config_overrides=TINYLLAMA_1B)


def _prefill_seconds(model: Any, vocab: int) -> float:
    import torch

    ids = torch.randint(0, vocab, (8, 1024), device=model.device)
    times = []
    with torch.no_grad():
        model(ids)  # warm-up
        for _ in range(5):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model(ids)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="gpu_modes.json")
    args = parser.parse_args()

    import torch

    from pytest_gpuinfer.assertions import (
        assert_generation_close,
        assert_logits_close,
        assert_memory_footprint,
        assert_quantized,
    )
    from pytest_gpuinfer.loading import load_model, memory_in_use, release_memory
    from pytest_gpuinfer.tiny_models import (
        TRAINED_CONTINUATION,
        TRAINED_PROMPT,
        trained_model_path,
    )

    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark is for the GPU machine", file=sys.stderr)
        return 2
    results: dict[str, Any] = {"device": torch.cuda.get_device_name(0), "modes": {}}
    workdir = Path(tempfile.mkdtemp(prefix="gpuinfer-bench-"))
    started = time.perf_counter()
    model_dir = _write_llama(workdir / "llama-1.1b")
    results["write_seconds"] = round(time.perf_counter() - started, 1)
    prompts = ["The quick brown fox", "In a hole in the ground there lived", "def main():"]

    baseline_memory = memory_in_use()
    reference = load_model(model_dir, "fp16", device_map="cuda:0", attn_implementation="eager")
    rows: dict[str, dict[str, Any]] = {}
    rows["fp16 eager"] = {
        "applied": reference.applied,
        "footprint_gb": reference.footprint_bytes / 1e9,
        "load_s": reference.load_seconds,
        "prefill_s": _prefill_seconds(reference.model, 32000),
    }
    for mode in ("fastpath", "int8", "nf4"):
        loaded = load_model(model_dir, mode, device_map="cuda:0")
        row: dict[str, Any] = {
            "applied": loaded.applied,
            "footprint_gb": loaded.footprint_bytes / 1e9,
            "load_s": loaded.load_seconds,
            "prefill_s": _prefill_seconds(loaded.model, 32000),
            "devices": list(loaded.devices),
        }
        try:
            comparison = assert_logits_close(reference, loaded, prompts, mode=mode)
            row["logits"] = {
                "positions": comparison.positions,
                "exact_top1_agreement": comparison.exact_top1_agreement,
                "top1_agreement": comparison.top1_agreement,
                "max_abs_error": comparison.max_abs_error,
                "mean_abs_error": comparison.mean_abs_error,
                "passed": True,
            }
        except AssertionError as failure:
            row["logits"] = {"passed": False, "message": str(failure)[:2000]}
        try:
            generations = assert_generation_close(reference, loaded, prompts, max_new_tokens=16)
            row["generation"] = {
                "passed": True,
                "first_divergence": [g.first_divergence for g in generations],
            }
        except AssertionError as failure:
            row["generation"] = {"passed": False, "message": str(failure)[:2000]}
        if mode in ("int8", "nf4"):
            ratio = assert_memory_footprint(reference, loaded, min_ratio=1.0)
            row["footprint_ratio_fp16_over_mode"] = ratio
            try:
                assert_quantized(loaded.model, bits=8 if mode == "int8" else 4)
                row["quantized"] = True
            except AssertionError as failure:
                row["quantized"] = str(failure)[:500]
        rows[mode] = row
        del loaded
        release_memory()
    del reference
    release_memory()
    results["memory_after_release_bytes"] = memory_in_use() - baseline_memory

    trained: dict[str, Any] = {}
    for mode in ("fp32", "fp16", "bf16", "fastpath", "int8", "nf4"):
        loaded = load_model(trained_model_path(), mode, device_map="cuda:0")
        assert loaded.tokenizer is not None
        inputs = loaded.tokenizer(TRAINED_PROMPT, return_tensors="pt").to(loaded.input_device)
        new_tokens = len(loaded.tokenizer(TRAINED_CONTINUATION)["input_ids"]) + 2
        with torch.no_grad():
            output = loaded.model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False)
        text = loaded.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :])
        trained[mode] = {"exact": text.startswith(TRAINED_CONTINUATION), "text": text}
        del loaded
        release_memory()
    results["modes"] = rows
    results["trained_tiny_lm"] = trained
    Path(args.out).write_text(json.dumps(results, indent=2, default=str))

    print(f"\n{results['device']}, 1.1B Llama-shaped (random), device_map='cuda:0'")
    print(
        f"{'mode':<11}{'applied':<44}{'GB':>6}{'load s':>8}{'prefill s':>10}  logits / generation"
    )
    for name, row in rows.items():
        logits = row.get("logits", {})
        agreement = (
            f"top1 {logits['top1_agreement']:.3f} max {logits['max_abs_error']:.3f}"
            if logits.get("passed")
            else ("FAIL" if logits else "reference")
        )
        generation = row.get("generation", {})
        gen = "" if not generation else ("gen ok" if generation["passed"] else "gen FAIL")
        shown_ratio = row.get("footprint_ratio_fp16_over_mode")
        extra = f" ratio {shown_ratio:.2f}" if shown_ratio else ""
        print(
            f"{name:<11}{row['applied'][:43]:<44}{row['footprint_gb']:>6.2f}{row['load_s']:>8.2f}"
            f"{row['prefill_s']:>10.3f}  {agreement} {gen}{extra}"
        )
    print(
        "trained tiny LM exact continuation: "
        + ", ".join(f"{m} {'yes' if r['exact'] else 'NO'}" for m, r in trained.items())
    )
    print(
        "GPU memory after releasing every model: "
        f"{results['memory_after_release_bytes']} bytes above baseline"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

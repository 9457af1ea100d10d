"""What stays allocated after a load refused for CUDA out-of-memory, step by step (GPU only).

tests/test_gpu.py::test_cuda_oom_during_load_fails_only_that_load saw 33,554,432 bytes
(32 MiB) more allocated after the refused load on an H200. This replays that test and
prints ``torch.cuda.memory_allocated()`` after each release step, then which live blocks
are left and the Python stack that allocated each (torch's memory history)::

    python benchmarks/gpu_oom_residue.py [--out DIR]      # writes DIR/gpu_oom_residue.json

Candidates it separates: the raised exception's traceback (frames holding the partly
built model), garbage in reference cycles, the cuBLAS workspace (allocated by the first
matmul through the caching allocator, 32 MiB on Hopper), and cached blocks.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any


def _live_blocks(torch: Any) -> dict[int, dict[str, Any]]:
    """address -> {size, frames} of every allocated block (frames when history is on)."""
    blocks: dict[int, dict[str, Any]] = {}
    for segment in torch.cuda.memory._snapshot()["segments"]:
        for block in segment["blocks"]:
            if block["state"] != "active_allocated":
                continue
            frames = [
                f"{f['filename']}:{f['line']} {f['name']}"
                for f in block.get("frames", [])
                if f.get("filename", "").endswith(".py")
            ]
            blocks[int(block["address"])] = {"size": int(block["size"]), "frames": frames[:12]}
    return blocks


def _cuda_tensors() -> list[str]:
    """Live CUDA tensors the garbage collector sees, with who refers to them."""
    import torch

    found = []
    for obj in gc.get_objects():
        try:
            if isinstance(obj, torch.Tensor) and obj.is_cuda:
                referrers = sorted({type(r).__name__ for r in gc.get_referrers(obj)})
                found.append(
                    f"{tuple(obj.shape)} {obj.dtype} {obj.untyped_storage().nbytes():,} B "
                    f"<- {', '.join(referrers[:6])}"
                )
        except Exception:  # objects that fail isinstance/attribute checks are not tensors
            continue
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu-oom-residue-out"))
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    from pytest_gpuinfer.loading import ModelLoadOOM, load_model, release_memory
    from pytest_gpuinfer.tiny_models import write_tiny_model

    steps: list[dict[str, Any]] = []

    def record(name: str, reference: int) -> int:
        now = int(torch.cuda.memory_allocated())
        steps.append({"step": name, "allocated": now, "over_reference": now - reference})
        print(f"{name:<58} allocated {now:>15,}  vs reference {now - reference:>+13,}")
        return now

    # The cuBLAS workspace on its own: one matmul, then clear it.
    torch.cuda.init()  # type: ignore[no-untyped-call]
    base = record("start (CUDA initialised, nothing allocated by us)", 0)
    a = torch.ones(64, 64, device="cuda", dtype=torch.float16)
    b = a @ a
    del a, b
    record("after one fp16 matmul, its tensors deleted", base)
    clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear is not None:
        clear()
    record("after torch._C._cuda_clearCublasWorkspaces()", base)

    sizes = {"vocab_size": 32000, "hidden_size": 1024, "intermediate_size": 2816}
    sizes |= {"num_hidden_layers": 8, "num_attention_heads": 16, "num_key_value_heads": 4}
    with tempfile.TemporaryDirectory(prefix="gpuinfer-oom-") as scratch:
        model = write_tiny_model("llama", Path(scratch) / "llama-110m", config_overrides=sizes)
        release_memory()
        before = record("before the refused load (after release_memory)", base)
        free, _ = torch.cuda.mem_get_info()
        blocker = torch.empty(free - 64 * 2**20, dtype=torch.uint8, device="cuda")
        with_blocker = record("blocker allocated (leaves 64 MiB free)", before)
        known = set(_live_blocks(torch))
        torch.cuda.memory._record_memory_history(max_entries=200_000)
        caught: BaseException | None = None
        try:
            load_model(model, "fp16", device_map="cuda:0")
        except ModelLoadOOM as error:
            caught = error
        record(f"refused load returned ({type(caught).__name__}), exception held", with_blocker)
        left = {a: b for a, b in _live_blocks(torch).items() if a not in known}
        tensors = _cuda_tensors()
        del caught
        record("exception deleted", with_blocker)
        gc.collect()
        record("gc.collect()", with_blocker)
        if clear is not None:
            clear()
        record("cuBLAS workspaces cleared", with_blocker)
        torch.cuda.empty_cache()
        record("torch.cuda.empty_cache()", with_blocker)
        torch.cuda.memory._record_memory_history(enabled=None)
        del blocker
        release_memory()
        record("blocker deleted, release_memory()", before)
        loaded = load_model(model, "fp16", device_map="cuda:0")
        record("the same load, now with room", before)
        del loaded
        release_memory()
        record("loaded model deleted, release_memory()", before)
    print("\nblocks allocated during the refused load and still live right after it:")
    for address, block in sorted(left.items()):
        print(f"  {address:#x} {block['size']:,} B")
        for frame in block["frames"]:
            print(f"      {frame}")
    if not left:
        print("  none")
    print("live CUDA tensors (gc) right after it, the blocker among them:")
    for line in tensors:
        print(f"  {line}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "steps": steps,
        "residue_blocks": [{"address": a, **b} for a, b in sorted(left.items())],
        "cuda_tensors": tensors,
    }
    (out / "gpu_oom_residue.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    final = steps[-1]["over_reference"]
    print(f"\nresidue after the whole sequence: {final:,} bytes")
    return 0 if final == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())

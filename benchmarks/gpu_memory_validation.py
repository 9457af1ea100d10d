"""Predicted vs measured peak memory of generate(), per architecture x mode x workload.

On the GPU machine (one H100, about 6 minutes for the first five architectures):

    python benchmarks/gpu_memory_validation.py --out /tmp/out
    # MoE in fp16/int8/nf4 and quantized modes on Qwen2 and Phi-3 (one H200, ~5 min):
    python benchmarks/gpu_memory_validation.py --out /tmp/out --suite moe-quantized
    # one model of yours, one row (what an "unconfirmed" estimate says to run):
    python benchmarks/gpu_memory_validation.py --model DIR --modes int8 --workload 8x2048+64
    # the predictions only, no model run (full-size shapes, config + header only):
    python benchmarks/gpu_memory_validation.py --dry-run --suite moe-quantized

For each architecture (Llama-style GQA, GPT-2 MHA, Mistral with a small sliding window,
T5 encoder-decoder, Gemma 2 with hybrid sliding/global eager attention), a random model
of >= 0.5B parameters is written with safetensors to a temporary directory, so the
estimate reads the same checkpoint headers a user's would. One child process per
architecture then, per mode (fp16, bf16, int8, nf4, fastpath), loads it through
``pytest_gpuinfer.loading.load_model`` and runs ``generate()`` with
``min_new_tokens = max_new_tokens`` at three workloads (small, long sequence, large
batch). Before each workload: ``gc.collect()``, ``torch.cuda.empty_cache()``,
``reset_peak_memory_stats()``; the peak is ``max_memory_reserved()``; NVML's process
memory is sampled every 2 ms beside it. Each row compares the prediction
(``probes.memory_workload``) with both. Target: within +-10 % or +-256 MiB, and never
below the measured peak by more than 5 %.

Writes ``$OUT/memory_validation.json`` and ``$OUT/memory_validation.log``; prints the
table last. Without CUDA (``--cpu``, or no GPU) it runs tiny models in fp32/bf16 on the
CPU and measures live tensor bytes with a dispatch-mode tracker instead (the arithmetic
check CI runs, see tests/test_memory_workload.py).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any

MiB = 2**20
TOLERANCE = 0.10
ABSOLUTE = 256 * MiB
UNDER = 0.05

ARCHITECTURES: dict[str, dict[str, Any]] = {
    "llama-gqa": {
        "model_type": "llama", "hidden_size": 1536, "intermediate_size": 4096,
        "num_hidden_layers": 18, "num_attention_heads": 12, "num_key_value_heads": 2,
        "vocab_size": 32000, "max_position_embeddings": 8320,
    },
    "gpt2-mha": {
        "model_type": "gpt2", "n_embd": 1280, "n_layer": 24, "n_head": 20,
        "vocab_size": 50257, "n_positions": 8320,
    },
    "mistral-sliding": {
        "model_type": "mistral", "hidden_size": 1536, "intermediate_size": 4096,
        "num_hidden_layers": 18, "num_attention_heads": 12, "num_key_value_heads": 4,
        "vocab_size": 32000, "max_position_embeddings": 8320, "sliding_window": 1024,
    },
    "t5-encdec": {
        "model_type": "t5", "d_model": 1024, "d_kv": 64, "d_ff": 4096, "num_heads": 16,
        "num_layers": 16, "num_decoder_layers": 16, "vocab_size": 32128,
    },
    "gemma2-hybrid": {
        "model_type": "gemma2", "hidden_size": 1536, "intermediate_size": 6144,
        "num_hidden_layers": 16, "num_attention_heads": 8, "num_key_value_heads": 4,
        "head_dim": 128, "vocab_size": 32000, "max_position_embeddings": 8320,
        "sliding_window": 1024,
    },
    "mixtral-moe": {
        "model_type": "mixtral", "hidden_size": 1024, "intermediate_size": 3584,
        "num_hidden_layers": 12, "num_attention_heads": 16, "num_key_value_heads": 8,
        "num_local_experts": 8, "num_experts_per_tok": 2, "vocab_size": 32000,
        "max_position_embeddings": 8320,
    },
    "qwen2-moe": {
        "model_type": "qwen2_moe", "hidden_size": 1024, "intermediate_size": 2816,
        "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 2816,
        "num_hidden_layers": 12, "num_attention_heads": 16, "num_key_value_heads": 16,
        "num_experts": 16, "num_experts_per_tok": 4, "vocab_size": 32000,
        "max_position_embeddings": 8320,
    },
    "qwen2-bias": {
        "model_type": "qwen2", "hidden_size": 1536, "intermediate_size": 4864,
        "num_hidden_layers": 16, "num_attention_heads": 12, "num_key_value_heads": 2,
        "vocab_size": 32000, "max_position_embeddings": 8320, "tie_word_embeddings": False,
    },
    "phi3-fused": {
        "model_type": "phi3", "hidden_size": 1536, "intermediate_size": 4096,
        "num_hidden_layers": 16, "num_attention_heads": 16, "num_key_value_heads": 16,
        "vocab_size": 32064, "max_position_embeddings": 8320, "pad_token_id": 0,
    },
}  # fmt: skip
"""Random models of 0.5-1.3B parameters whose attention (and MLP) layouts differ: the
first five were validated on the H100 (docs/memory.md); Mixtral (12 layers, 8 experts,
top-2, 1.2B) is the MoE, Qwen2 (q/k/v bias) and Phi-3 (fused qkv and gate_up) the two
more decoders for the quantized modes."""

SUITES: dict[str, dict[str, tuple[str, ...]]] = {
    "h100": {arch: ("fp16", "bf16", "int8", "nf4", "fastpath") for arch in list(ARCHITECTURES)[:5]},
    "moe-quantized": {
        "mixtral-moe": ("fp16", "int8", "nf4"),
        "qwen2-bias": ("fp16", "int8", "nf4"),
        "phi3-fused": ("fp16", "int8", "nf4"),
    },
}
"""Which modes each architecture runs in, per suite (``--suite``)."""

TINY: dict[str, dict[str, Any]] = {
    "llama-gqa": {
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 176,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 500, "max_position_embeddings": 1024,
    },
    "gpt2-mha": {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4,
                 "vocab_size": 500, "n_positions": 1024},
    "mistral-sliding": {
        "model_type": "mistral", "hidden_size": 64, "intermediate_size": 176,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 500, "max_position_embeddings": 1024, "sliding_window": 64,
    },
    "t5-encdec": {"model_type": "t5", "d_model": 64, "d_kv": 16, "d_ff": 176, "num_heads": 4,
                  "num_layers": 2, "num_decoder_layers": 2, "vocab_size": 500},
    "gemma2-hybrid": {
        "model_type": "gemma2", "hidden_size": 64, "intermediate_size": 176,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "vocab_size": 500, "max_position_embeddings": 1024,
        "sliding_window": 64,
    },
    "mixtral-moe": {
        "model_type": "mixtral", "hidden_size": 64, "intermediate_size": 224,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "num_local_experts": 8, "num_experts_per_tok": 2, "vocab_size": 500,
        "max_position_embeddings": 1024,
    },
    "qwen2-moe": {
        "model_type": "qwen2_moe", "hidden_size": 64, "intermediate_size": 176,
        "moe_intermediate_size": 96, "shared_expert_intermediate_size": 192,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "num_experts": 8, "num_experts_per_tok": 2, "vocab_size": 500,
        "max_position_embeddings": 1024,
    },
    "qwen2-bias": {
        "model_type": "qwen2", "hidden_size": 64, "intermediate_size": 176,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 500, "max_position_embeddings": 1024,
    },
    "phi3-fused": {
        "model_type": "phi3", "hidden_size": 64, "intermediate_size": 176,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
        "vocab_size": 500, "max_position_embeddings": 1024, "pad_token_id": 0,
    },
}  # fmt: skip

GPU_WORKLOADS = {"small": (1, 256, 32), "long": (1, 8192, 32), "batch": (32, 1024, 32)}
CPU_WORKLOADS = {"small": (1, 32, 8), "long": (1, 512, 8), "batch": (8, 128, 8)}
GPU_MODES = ("fp16", "bf16", "int8", "nf4", "fastpath")
CPU_MODES = ("fp32", "bf16")


# ----------------------------------------------------------------------------- models


def write_model(directory: Path, config_values: dict[str, Any], device: str) -> Path:
    """A random model saved with safetensors, as a user's checkpoint would be."""
    import torch
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if (directory / "config.json").is_file():
        return directory
    values = dict(config_values)
    config = CONFIG_MAPPING[values.pop("model_type")](**values)
    config.pad_token_id = 0
    config.eos_token_id = 1
    config.bos_token_id = 2
    if config.is_encoder_decoder:
        config.decoder_start_token_id = 0
    auto: Any = (
        transformers.AutoModelForSeq2SeqLM
        if config.is_encoder_decoder
        else transformers.AutoModelForCausalLM
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = auto.from_config(config, dtype=torch.float16 if device != "cpu" else torch.float32)
    model.save_pretrained(directory)
    del model
    if device != "cpu":
        torch.cuda.empty_cache()  # the children measure; this process keeps nothing cached
    return directory


# ----------------------------------------------------------------------------- CPU measure


class LiveBytes:
    """Peak bytes of tensors created by torch ops while active (CPU arithmetic check).

    Storages alive before it starts (weights, inputs) are ignored; views share their
    storage's count. Measures allocations, not an allocator's reservations.
    """

    def __init__(self, ignore: list[Any]) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        base: Any = TorchDispatchMode
        self.ignored = {t.untyped_storage().data_ptr() for t in ignore}
        self.live: dict[int, list[int]] = {}
        self.current = 0
        self.peak = 0
        tracker = self

        class _Mode(base):  # type: ignore[misc,valid-type]
            def __torch_dispatch__(
                self, func: Any, types: Any, args: Any = (), kwargs: Any = None
            ) -> Any:
                out = func(*args, **(kwargs or {}))
                tracker._see(out)
                return out

        self.mode: Any = _Mode()

    def _see(self, out: Any) -> None:
        import torch
        from torch.utils._pytree import tree_leaves

        for leaf in tree_leaves(out):
            if not isinstance(leaf, torch.Tensor) or leaf.device.type != "cpu":
                continue
            storage = leaf.untyped_storage()
            key = storage.data_ptr()
            if key == 0 or key in self.ignored:
                continue
            entry = self.live.get(key)
            if entry is None:
                entry = self.live[key] = [storage.nbytes(), 0]
                self.current += entry[0]
                self.peak = max(self.peak, self.current)
            entry[1] += 1
            weakref.finalize(leaf, self._release, key)

    def _release(self, key: int) -> None:
        entry = self.live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[key]

    def __enter__(self) -> LiveBytes:
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.mode.__exit__(*exc)


def cpu_measure(model_dir: Path, mode: str, workload: tuple[int, int, int]) -> dict[str, Any]:
    """Live tensor bytes of one CPU generate() against the prediction's allocated parts."""
    import torch
    import transformers

    from pytest_gpuinfer.probes.memory_weights import estimate_model_memory
    from pytest_gpuinfer.probes.memory_workload import Workload, estimate_workload

    batch, seq, new = workload
    dtype = torch.float32 if mode == "fp32" else torch.bfloat16
    config = transformers.AutoConfig.from_pretrained(model_dir)
    auto = (
        transformers.AutoModelForSeq2SeqLM
        if config.is_encoder_decoder
        else transformers.AutoModelForCausalLM
    )
    model = auto.from_pretrained(model_dir, dtype=dtype).eval()
    ids = torch.randint(3, config.vocab_size, (batch, seq))
    mask = torch.ones_like(ids)
    keep = [*model.parameters(), *model.buffers(), ids, mask]
    gc.collect()
    with torch.no_grad(), LiveBytes(keep) as tracker:
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
        )
        del out
    estimate = estimate_model_memory(model_dir, (mode,))
    predicted = estimate_workload(estimate, mode, Workload(batch, seq, new))
    return {
        "measured_live_bytes": tracker.peak,
        "predicted_live_bytes": predicted.allocated_dynamic_bytes,
        "prediction": predicted.to_dict(),
    }


# ----------------------------------------------------------------------------- GPU child


def _nvml_sampler(stop: threading.Event, found: list[int]) -> None:
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(
            int(os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or 0)
        )
    except Exception:
        return
    pid = os.getpid()
    while not stop.is_set():
        try:
            for process in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if process.pid == pid and process.usedGpuMemory:
                    found[0] = max(found[0], int(process.usedGpuMemory))
        except Exception:
            return
        time.sleep(0.002)


def gpu_child(
    model_dir: Path, modes: list[str], workloads: dict[str, tuple[int, int, int]]
) -> list[dict[str, Any]]:
    import torch

    from pytest_gpuinfer.loading import load_model
    from pytest_gpuinfer.probes.memory_weights import estimate_model_memory
    from pytest_gpuinfer.probes.memory_workload import Workload, estimate_workload

    estimate = estimate_model_memory(model_dir, modes)
    rows: list[dict[str, Any]] = []
    for mode in modes:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        try:
            loaded = load_model(model_dir, mode, device_map={"": 0}, task=_task(model_dir))
        except Exception as error:  # a mode that cannot load is a row, not a crash
            rows.append({"mode": mode, "error": f"load: {type(error).__name__}: {error}"[:300]})
            continue
        load_reserved = int(torch.cuda.max_memory_reserved())
        weights_allocated = int(torch.cuda.memory_allocated())
        model = loaded.model
        vocab = int(model.config.vocab_size)
        for name, (batch, seq, new) in workloads.items():
            predicted = estimate_workload(estimate, mode, Workload(batch, seq, new))
            ids = torch.randint(3, vocab, (batch, seq), device="cuda")
            mask = torch.ones_like(ids)
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            found = [0]
            stop = threading.Event()
            sampler = threading.Thread(target=_nvml_sampler, args=(stop, found), daemon=True)
            sampler.start()
            failure = ""
            began = time.perf_counter()
            try:
                with torch.no_grad():
                    out = model.generate(
                        input_ids=ids,
                        attention_mask=mask,
                        max_new_tokens=new,
                        min_new_tokens=new,
                        do_sample=False,
                        pad_token_id=0,
                    )
                torch.cuda.synchronize()
                del out
            except torch.cuda.OutOfMemoryError as oom:
                failure = f"OOM: {str(oom).splitlines()[0][:200]}"
            seconds = time.perf_counter() - began
            time.sleep(0.01)
            stop.set()
            sampler.join()
            reserved = int(torch.cuda.max_memory_reserved())
            allocated = int(torch.cuda.max_memory_allocated())
            rows.append(
                {
                    "mode": mode,
                    "workload": name,
                    "batch_size": batch,
                    "seq_len": seq,
                    "new_tokens": new,
                    "applied": loaded.applied,
                    "measured_reserved": reserved,
                    "measured_allocated": allocated,
                    "measured_nvml": found[0] or None,
                    "weights_allocated": weights_allocated,
                    "load_reserved": load_reserved,
                    "predicted_reserved": predicted.peak_reserved_bytes,
                    "predicted_peak": predicted.peak_bytes,
                    "predicted_load": predicted.load_peak,
                    "prediction": predicted.to_dict(),
                    "confirmed": predicted.confirmed,
                    "generate_s": round(seconds, 2),
                    "error": failure,
                }
            )
            del ids, mask
        load_s = time.perf_counter() - started
        rows[-1]["mode_total_s"] = round(load_s, 1)
        del model, loaded
        gc.collect()
        torch.cuda.empty_cache()
    return rows


def _task(model_dir: Path) -> str:
    from pytest_gpuinfer.probes.sources import infer_task

    return infer_task(model_dir)


# ----------------------------------------------------------------------------- verdicts


def judge(predicted: int, measured: int) -> str:
    """ "ok", "over" (too high) or "UNDER" (below measured by more than 5 %)."""
    if predicted < measured * (1 - UNDER):
        return "UNDER"
    if abs(predicted - measured) <= max(TOLERANCE * measured, ABSOLUTE):
        return "ok"
    return "over" if predicted > measured else "under"


def _table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        f"{'arch':<16}{'mode':<9}{'work':<6}{'meas MiB':>9}{'pred MiB':>9}{'err':>7}  "
        f"{'nvml MiB':>9}{'pred+ctx':>9}{'err':>7}  verdict"
    ]
    for row in rows:
        if row.get("error") and "measured_reserved" not in row:
            lines.append(f"{row['arch']:<16}{row['mode']:<9}{'-':<6}{row['error']}")
            continue
        measured, predicted = row["measured_reserved"], row["predicted_reserved"]
        nvml, peak = row.get("measured_nvml"), row["predicted_peak"]
        error = 100 * (predicted - measured) / measured if measured else 0.0
        nvml_text = f"{nvml / MiB:>9.0f}" if nvml else f"{'-':>9}"
        nvml_err = f"{100 * (peak - nvml) / nvml:>+6.1f}%" if nvml else f"{'-':>7}"
        verdict = judge(predicted, measured) + (f" {row['error']}" if row.get("error") else "")
        lines.append(
            f"{row['arch']:<16}{row['mode']:<9}{row['workload']:<6}{measured / MiB:>9.0f}"
            f"{predicted / MiB:>9.0f}{error:>+6.1f}%  {nvml_text}{peak / MiB:>9.0f}{nvml_err}  "
            f"{verdict}"
        )
    return lines


def parse_workload(text: str) -> tuple[int, int, int]:
    """``8x2048+64`` -> (8, 2048, 64)."""
    try:
        shape, _, new = text.partition("+")
        batch, _, seq = shape.lower().partition("x")
        values = (int(batch), int(seq), int(new or 0))
    except ValueError:
        values = (0, 0, 0)
    if values[0] < 1 or values[1] < 1 or values[2] < 0:
        raise SystemExit(
            f"--workload {text!r} is not valid: expected BATCHxSEQ+NEW, e.g. 8x2048+64"
        )
    return values


def dry_run(archs: dict[str, tuple[str, ...]], workloads: dict[str, tuple[int, int, int]]) -> int:
    """The predictions for the full-size shapes, from config.json and a header-only
    checkpoint (memory_recheck's sparse safetensors): no weights, no GPU."""
    from memory_recheck import write_header_model

    from pytest_gpuinfer.probes.memory_weights import estimate_model_memory
    from pytest_gpuinfer.probes.memory_workload import Workload, estimate_workload

    with tempfile.TemporaryDirectory(prefix="memval-dry-") as tmp:
        for arch, modes in archs.items():
            directory = write_header_model(Path(tmp) / arch, ARCHITECTURES[arch])
            estimate = estimate_model_memory(directory, modes)
            for mode in modes:
                for name, (batch, seq, new) in workloads.items():
                    w = estimate_workload(estimate, mode, Workload(batch, seq, new))
                    flag = "" if w.confirmed else "  unconfirmed"
                    print(
                        f"{arch:<16}{mode:<9}{name:<6}{w.peak_reserved_bytes / MiB:>9.0f} MiB "
                        f"(weights {w.weights / MiB:.0f}, kv {w.kv_cache / MiB:.0f}, "
                        f"act {w.activations / MiB:.0f}, quant {w.quantization_buffers / MiB:.0f},"
                        f" alloc {w.allocator / MiB:.0f}){flag}"
                    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="tiny models on the CPU")
    parser.add_argument("--dry-run", action="store_true", help="print predictions only")
    parser.add_argument("--suite", choices=sorted(SUITES), default="h100")
    parser.add_argument("--arch", action="append", help="only these architectures")
    parser.add_argument("--model", help="measure this model directory instead")
    parser.add_argument("--modes", help="comma-separated modes (default: the suite's)")
    parser.add_argument(
        "--workload", action="append", help="BATCHxSEQ+NEW (repeatable; default: 3 workloads)"
    )
    parser.add_argument("--out", help="directory for the JSON and log (default: $OUT or a temp)")
    parser.add_argument("--child", nargs=3, metavar=("MODEL_DIR", "MODES", "WORK"),
                        help=argparse.SUPPRESS)  # fmt: skip
    parser.add_argument("--timeout", type=float, default=150.0, help="seconds per architecture")
    args = parser.parse_args()
    out = Path(args.out or os.environ.get("OUT") or tempfile.mkdtemp(prefix="memory-validation-"))

    if args.child:
        asked: dict[str, tuple[int, int, int]] = {
            k: (int(v[0]), int(v[1]), int(v[2])) for k, v in json.loads(args.child[2]).items()
        }
        found = gpu_child(Path(args.child[0]), args.child[1].split(","), asked)
        print("ROWS " + json.dumps(found))
        return 0

    suite = SUITES[args.suite]
    names = args.arch or list(suite)
    for name in names:
        if name not in ARCHITECTURES:
            raise SystemExit(
                f"--arch {name!r} is not known: expected one of {', '.join(ARCHITECTURES)}"
            )
    chosen = {n: suite.get(n, ("fp16", "int8", "nf4")) for n in names}
    if args.modes:
        chosen = {n: tuple(args.modes.split(",")) for n in chosen}
    workloads = GPU_WORKLOADS
    if args.workload:
        workloads = {w: parse_workload(w) for w in args.workload}
    if args.dry_run:
        return dry_run(chosen, workloads)

    import torch

    out.mkdir(parents=True, exist_ok=True)
    cpu = args.cpu or not torch.cuda.is_available()
    rows: list[dict[str, Any]] = []
    log = (out / "memory_validation.log").open("w")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="memval-") as tmp:
        targets = {"model": Path(args.model)} if args.model else {n: Path(tmp) / n for n in chosen}
        for arch, directory in targets.items():
            modes = chosen.get(arch) or tuple((args.modes or "fp16,int8,nf4").split(","))
            t0 = time.perf_counter()
            if cpu:
                tiny = [m for m in modes if m in CPU_MODES] or list(CPU_MODES)
                if not args.model:
                    write_model(directory, TINY[arch], "cpu")
                for mode in tiny:
                    for name, work in CPU_WORKLOADS.items():
                        result = cpu_measure(directory, mode, work)
                        rows.append({"arch": arch, "mode": mode, "workload": name, **result})
                continue
            if not args.model:
                write_model(directory, ARCHITECTURES[arch], "cuda")
            log.write(f"{arch}: written in {time.perf_counter() - t0:.1f} s\n")
            try:
                child = subprocess.run(
                    [sys.executable, __file__, "--child", str(directory), ",".join(modes),
                     json.dumps(workloads)],
                    capture_output=True,
                    text=True,
                    timeout=args.timeout,
                )  # fmt: skip
                log.write(child.stderr[-4000:])
                lines = [x for x in child.stdout.splitlines() if x.startswith("ROWS ")]
                found = json.loads(lines[-1][5:]) if lines else []
                if not found:
                    found = [{"mode": "-", "error": f"child exit {child.returncode}"}]
            except subprocess.TimeoutExpired:
                found = [{"mode": "-", "error": f"timed out after {args.timeout:.0f} s"}]
            rows.extend({"arch": arch, **row} for row in found)
            log.write(f"{arch}: done in {time.perf_counter() - t0:.1f} s\n")
            log.flush()
    environment = _environment(cpu)
    result = {"environment": environment, "rows": rows, "seconds": time.perf_counter() - started}
    (out / "memory_validation.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(environment))
    if cpu:
        for row in rows:
            measured, predicted = row["measured_live_bytes"], row["predicted_live_bytes"]
            print(
                f"{row['arch']:<16}{row['mode']:<6}{row['workload']:<6}"
                f"{measured / 1024:>10.0f} KiB measured {predicted / 1024:>10.0f} KiB predicted "
                f"({100 * (predicted - measured) / max(measured, 1):+.1f}%)"
            )
        return 0
    print("\n".join(_table(rows)))
    judged = [r for r in rows if "measured_reserved" in r and not r.get("error")]
    misses = [r for r in judged if judge(r["predicted_reserved"], r["measured_reserved"]) != "ok"]
    under = [r for r in judged if judge(r["predicted_reserved"], r["measured_reserved"]) == "UNDER"]
    print(
        f"{len(judged)} rows measured, {len(judged) - len(misses)} within +-10 % or +-256 MiB, "
        f"{len(under)} under by more than 5 %; {time.perf_counter() - started:.0f} s"
    )
    return 0


def _environment(cpu: bool) -> dict[str, Any]:
    import importlib.metadata as metadata

    import torch

    versions: dict[str, str | None] = {}
    for name in ("torch", "transformers", "accelerate", "bitsandbytes"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    device = "cpu" if cpu else torch.cuda.get_device_name(0)
    return {"device": device, "cuda": torch.version.cuda, **versions}


if __name__ == "__main__":
    raise SystemExit(main())

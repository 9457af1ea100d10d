"""Time generate() on a loaded model: warm-up, repetitions, per-token clock, memory, energy.

The one measurement both the ``gpuinfer bench`` child processes and the pytest fixture
run. Every token is stamped by a logits processor (a CUDA event on a GPU, so nothing
waits for the device mid-generate; ``perf_counter`` on a CPU): prefill is the call until
the first token's logits, decode the rest, as optimum-benchmark reports them.
"""

from __future__ import annotations

import gc
import itertools
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from pytest_gpuinfer.bench import faults
from pytest_gpuinfer.bench.config import Repetitions, Workload
from pytest_gpuinfer.bench.hardware import Reading


@dataclass
class Repetition:
    """One timed generate(): seconds to the first token, after it, in all; and between
    consecutive tokens."""

    prefill_s: float
    decode_s: float
    generate_s: float
    per_token_s: list[float]


@dataclass
class ModelShape:
    """What the bandwidth floor needs: weight bytes and the KV cache's size per token."""

    weights_bytes: int
    layers: int | None
    kv_heads: int | None
    head_dim: int | None
    kv_dtype_bytes: int | None

    def kv_bytes(self, batch_size: int, tokens: float) -> float | None:
        """Bytes of K and V for ``batch_size`` sequences of ``tokens`` tokens."""
        if None in (self.layers, self.kv_heads, self.head_dim, self.kv_dtype_bytes):
            return None
        assert self.layers and self.kv_heads and self.head_dim and self.kv_dtype_bytes
        per_token = 2 * self.layers * self.kv_heads * self.head_dim * self.kv_dtype_bytes
        return float(per_token * tokens * batch_size)


@dataclass
class WorkloadRun:
    """Everything measured for one mode at one workload (raw: statistics come later)."""

    workload: Workload
    device: str
    repetitions: list[Repetition] = field(default_factory=list)
    warmup_runs: int = 0
    seconds: float = 0.0
    status: str = "measured"
    """measured | oom | failed | interrupted."""
    reason: str | None = None
    max_allocated_bytes: int | None = None
    max_reserved_bytes: int | None = None
    max_ram_bytes: int | None = None
    energy_mj: float | None = None
    energy_reason: str | None = None
    time_split: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["workload"] = asdict(self.workload)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkloadRun:
        values = dict(data)
        values["workload"] = Workload(**values["workload"])
        values["repetitions"] = [Repetition(**r) for r in values["repetitions"]]
        return cls(**values)


def model_shape(model: Any, weights_bytes: int) -> ModelShape:
    from pytest_gpuinfer.probes.modes import dtype_bytes

    config = getattr(model, "config", None)
    text = getattr(config, "get_text_config", lambda: config)() if config is not None else None
    layers = getattr(text, "num_hidden_layers", None)
    heads = getattr(text, "num_attention_heads", None)
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None)
    hidden = getattr(text, "hidden_size", None)
    if head_dim is None and hidden and heads:
        head_dim = hidden // heads
    return ModelShape(
        weights_bytes=weights_bytes,
        layers=layers,
        kv_heads=kv_heads,
        head_dim=head_dim,
        kv_dtype_bytes=dtype_bytes(str(getattr(model, "dtype", ""))),
    )


class _Clock:
    """Marks on the device's timeline (CUDA events) or the host's (perf_counter)."""

    def __init__(self, device: str) -> None:
        import torch

        self.torch = torch
        self.cuda = device.startswith("cuda")

    def mark(self) -> Any:
        if self.cuda:
            event = self.torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            event.record()
            return event
        return time.perf_counter()

    def synchronize(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def seconds(self, start: Any, end: Any) -> float:
        if self.cuda:
            return float(start.elapsed_time(end)) / 1000
        return float(end - start)


def _token_stamper(clock: _Clock) -> tuple[Any, list[Any]]:
    """A logits processor that marks the clock each time a token's logits are ready."""
    from transformers import LogitsProcessor

    marks: list[Any] = []

    class TokenStamps(LogitsProcessor):  # type: ignore[misc]
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            marks.append(clock.mark())
            return scores

    return TokenStamps(), marks


def _is_oom(error: BaseException) -> bool:
    import torch

    kinds: tuple[type[BaseException], ...] = (torch.cuda.OutOfMemoryError,)
    generic = getattr(torch, "OutOfMemoryError", None)
    if isinstance(generic, type):
        kinds += (generic,)
    return isinstance(error, kinds) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error)
    )


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def make_inputs(model: Any, workload: Workload, device: str) -> dict[str, Any]:
    """Random prompt ids (fixed seed) avoiding the special ids at the start of a vocabulary."""
    import torch

    vocab = int(getattr(model.config.get_text_config(), "vocab_size", 0) or 1000)
    low = min(16, vocab - 1)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(low, vocab, (workload.batch_size, workload.prompt_len), generator=generator)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}


def generate_kwargs(model: Any, workload: Workload) -> dict[str, Any]:
    config = getattr(model, "generation_config", None)
    pad = getattr(config, "pad_token_id", None)
    if pad is None:
        eos = getattr(config, "eos_token_id", None)
        pad = eos[0] if isinstance(eos, list) and eos else eos
    return {
        "max_new_tokens": workload.new_tokens,
        "min_new_tokens": workload.new_tokens,
        "do_sample": False,
        "num_beams": 1,
        "use_cache": True,
        "pad_token_id": 0 if pad is None else pad,
    }


def run_workload(
    model: Any,
    mode: str,
    workload: Workload,
    policy: Repetitions,
    *,
    energy: Callable[[], Reading] | None = None,
    on_repetition: Callable[[int, Repetition, float], None] | None = None,
    time_split: bool = False,
) -> WorkloadRun:
    """Warm up, then repeat generate() until ``policy`` is met; an out-of-memory ends the
    run with status "oom" and keeps what was measured before it."""
    import torch

    device = str(model.device)
    run = WorkloadRun(workload=workload, device=device)
    clock = _Clock(device)
    stamper, marks = _token_stamper(clock)
    inputs = make_inputs(model, workload, device)
    kwargs = {**generate_kwargs(model, workload), "logits_processor": [stamper]}
    remove_fault = faults.install_oom(model, mode)
    if clock.cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started_energy: Reading | None = None
    try:
        with torch.inference_mode():
            for _ in range(policy.warmup):
                model.generate(**inputs, **kwargs)
                run.warmup_runs += 1
            clock.synchronize()
            started_energy = energy() if energy is not None else None
            started = time.perf_counter()
            while (
                len(run.repetitions) < policy.min_count
                or time.perf_counter() - started < policy.min_seconds
            ):
                run.repetitions.append(_one_repetition(model, inputs, kwargs, clock, marks))
                run.seconds = time.perf_counter() - started
                if on_repetition is not None:
                    on_repetition(len(run.repetitions), run.repetitions[-1], run.seconds)
            if time_split:
                from pytest_gpuinfer.bench.split import gpu_busy_split

                try:
                    run.time_split = gpu_busy_split(model, inputs, kwargs, device, workload)
                except Exception as error:  # the split is extra: never lose the figures
                    if _is_oom(error):
                        raise
                    reason = f"profiling failed: {type(error).__name__}: {_first_line(error)}"
                    run.time_split = {"available": False, "reason": reason}
    except Exception as error:
        if not _is_oom(error):
            raise
        run.status = "oom"
        done = len(run.repetitions)
        run.reason = f"out of memory after {done} repetition(s): {_first_line(error)}"
    finally:
        remove_fault()
        gc.enable()
    _read_memory(run, clock.cuda)
    if started_energy is not None and energy is not None:
        ended = energy()
        if started_energy.value is not None and ended.value is not None:
            run.energy_mj = ended.value - started_energy.value
        else:
            run.energy_reason = started_energy.reason or ended.reason
    elif energy is None:
        run.energy_reason = "no NVML energy counter without a GPU"
    if run.status == "oom" and clock.cuda:
        gc.collect()
        torch.cuda.empty_cache()
    return run


def _one_repetition(
    model: Any, inputs: dict[str, Any], kwargs: dict[str, Any], clock: _Clock, marks: list[Any]
) -> Repetition:
    marks.clear()
    gc.collect()
    gc.disable()  # a collection inside the timed call is noise, not the model's cost
    try:
        clock.synchronize()
        start = clock.mark()
        model.generate(**inputs, **kwargs)
        end = clock.mark()
        clock.synchronize()
    finally:
        gc.enable()
    first = marks[0]
    return Repetition(
        prefill_s=clock.seconds(start, first),
        decode_s=clock.seconds(first, end),
        generate_s=clock.seconds(start, end),
        per_token_s=[clock.seconds(a, b) for a, b in itertools.pairwise(marks)],
    )


def _read_memory(run: WorkloadRun, cuda: bool) -> None:
    if cuda:
        import torch

        run.max_allocated_bytes = int(torch.cuda.max_memory_allocated())
        run.max_reserved_bytes = int(torch.cuda.max_memory_reserved())
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    run.max_ram_bytes = int(usage if sys.platform == "darwin" else usage * 1024)

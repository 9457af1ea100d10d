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
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from pytest_gpuinfer.bench.config import Repetitions
from pytest_gpuinfer.bench.hardware import Reading
from pytest_gpuinfer.probes.memory_workload import Workload
from pytest_gpuinfer.probes.model_shape import ModelShape

COMPILED_MIN_WARMUP = 3
"""transformers' default CompileConfig is mode="reduce-overhead": the first decode calls
compile and record the CUDA graph; only later calls replay it."""


@dataclass
class Repetition:
    """One timed generate(): seconds to the first token, after it, in all; and between
    consecutive tokens."""

    prefill_s: float
    decode_s: float
    generate_s: float
    per_token_s: list[float]
    round: int = 0
    """The interleaved round it was measured in (pairs it with the reference's)."""
    energy_mj: float | None = None
    """The GPU's energy counter over this repetition (None without NVML)."""


def by_round(repetitions: Iterable[Repetition]) -> dict[int, list[Repetition]]:
    """Round -> its repetitions, in the order they ran."""
    rounds: dict[int, list[Repetition]] = {}
    for rep in repetitions:
        rounds.setdefault(rep.round, []).append(rep)
    return rounds


@dataclass
class Footprint:
    """What the bandwidth floor needs: the weights' bytes and the audit's model shape
    (probes.model_shape, the one the memory estimate uses) for the KV cache."""

    weights_bytes: int
    shape: ModelShape | None
    kv_dtype_bytes: int | None
    shape_reason: str | None = None

    def kv_bytes(self, batch_size: int, tokens: float) -> float | None:
        """Bytes of K and V for ``batch_size`` sequences of ``tokens`` tokens (sliding
        layers capped at their window, as the memory estimate caps them)."""
        if self.shape is None or not self.kv_dtype_bytes:
            return None
        held = sum(min(tokens, window) if window else tokens for window in self.shape.layer_windows)
        return float(self.shape.kv_bytes_per_token * self.kv_dtype_bytes * held * batch_size)


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
    first_call_seconds: float | None = None
    """The first warm-up generate(): with --compiled it includes torch.compile."""
    compiled: dict[str, Any] | None = None
    """With --compiled: whether transformers' auto-compile ran, and why not."""

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


def footprint(model: Any, weights_bytes: int) -> Footprint:
    """The floor's inputs for a loaded model: its config read by the audit's shape reader."""
    from pytest_gpuinfer.probes.errors import InputError
    from pytest_gpuinfer.probes.model_shape import model_shape
    from pytest_gpuinfer.probes.modes import dtype_bytes

    config = getattr(model, "config", None)
    shape: ModelShape | None = None
    reason = None
    try:
        data = config.to_dict() if config is not None else {}
        shape = model_shape(data, "the loaded model's config")
    except InputError as error:
        reason = str(error)
    return Footprint(
        weights_bytes=weights_bytes,
        shape=shape,
        kv_dtype_bytes=dtype_bytes(str(getattr(model, "dtype", ""))),
        shape_reason=reason,
    )


def resolution(model: Any) -> dict[str, Any]:
    """What a mode resolved to in this transformers: attention, weight dtype, quantizer and
    the classes of its linear layers (two modes equal here run the same kernels)."""
    config = getattr(model, "config", None)
    quantizer = getattr(model, "hf_quantizer", None)
    linears = sorted(
        {
            type(m).__name__
            for m in model.modules()
            if "Linear" in type(m).__name__ or type(m).__name__.endswith("Conv1D")
        }
    )
    return {
        "attention": getattr(config, "_attn_implementation", None),
        "dtype": str(getattr(model, "dtype", "")),
        "quantizer": type(quantizer).__name__ if quantizer is not None else None,
        "linear_classes": linears,
        "model_class": type(model).__name__,
    }


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


def is_oom(error: BaseException) -> bool:
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
    ids = torch.randint(low, vocab, (workload.batch_size, workload.seq_len), generator=generator)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}


def generate_kwargs(model: Any, workload: Workload, *, compiled: bool = False) -> dict[str, Any]:
    """Greedy, exactly ``new_tokens``; ``compiled``: transformers' own compile path."""
    config = getattr(model, "generation_config", None)
    pad = getattr(config, "pad_token_id", None)
    if pad is None:
        eos = getattr(config, "eos_token_id", None)
        pad = eos[0] if isinstance(eos, list) and eos else eos
    kwargs: dict[str, Any] = {
        "max_new_tokens": workload.new_tokens,
        "min_new_tokens": workload.new_tokens,
        "do_sample": False,
        "num_beams": 1,
        "use_cache": True,
        "pad_token_id": 0 if pad is None else pad,
    }
    if compiled:
        kwargs.update(compiled_kwargs())
    return kwargs


def compiled_kwargs() -> dict[str, Any]:
    """The compile recipe transformers supports: a static cache, and generate() compiles
    the decode step itself (``get_compiled_call``: torch.compile with the default
    CompileConfig, mode "reduce-overhead", i.e. CUDA graphs; prefill stays eager).

    Compiling ``model.forward`` by hand and passing ``cache_implementation="static"``
    failed on transformers 5.17 ("accessing tensor output of CUDAGraphs that has been
    overwritten", REFERENCE §12); generate()'s own path is the one its release tests.
    transformers compiles only on an accelerator (``_valid_auto_compile_criteria``): on a
    CPU this measures the static cache alone.
    """
    from transformers import CompileConfig

    return {"cache_implementation": "static", "compile_config": CompileConfig()}


def compile_state(model: Any) -> dict[str, Any]:
    """Whether generate() compiled the decode step (it keeps the compiled call)."""
    compiled = hasattr(model, "_compiled_call")
    reason = None
    if not compiled:
        if not str(getattr(model, "device", "cpu")).startswith("cuda"):
            reason = "transformers compiles generate() on an accelerator only: static cache alone"
        elif getattr(model, "hf_quantizer", None) is not None:
            reason = "transformers does not compile this quantized model (hf_quantizer)"
        else:
            reason = "transformers' auto-compile criteria not met (see its warning)"
    return {"decode_step_compiled": compiled, "reason": reason}


class WorkloadSession:
    """One mode at one workload, measured a few repetitions at a time: the interleaved
    runner asks each mode's process for one round after another."""

    def __init__(
        self,
        model: Any,
        workload: Workload,
        *,
        energy: Callable[[], Reading] | None = None,
        compiled: bool = False,
    ) -> None:
        import torch

        self.torch = torch
        self.model = model
        self.device = str(model.device)
        self.run = WorkloadRun(workload=workload, device=self.device)
        self.clock = _Clock(self.device)
        self.stamper, self.marks = _token_stamper(self.clock)
        self.inputs = make_inputs(model, workload, self.device)
        self.kwargs = {
            **generate_kwargs(model, workload, compiled=compiled),
            "logits_processor": [self.stamper],
        }
        self.energy = energy
        self.compiled = compiled
        self.energy_reason: str | None = (
            None if energy is not None else "no NVML energy counter without a GPU"
        )
        self._energy_total: float | None = None

    def warm_up(self, count: int) -> None:
        """Un-timed generate() calls; the first one's seconds are kept (compile time)."""
        if self.clock.cuda:
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()
        count = max(count, COMPILED_MIN_WARMUP) if self.compiled else count
        with self.torch.inference_mode():
            for index in range(count):
                started = time.perf_counter()
                self.model.generate(**self.inputs, **self.kwargs)
                self.clock.synchronize()
                if index == 0:
                    self.run.first_call_seconds = time.perf_counter() - started
                self.run.warmup_runs += 1
        if self.compiled:
            self.run.compiled = compile_state(self.model)

    def measure(self, count: int, round_index: int = 0, settle: int = 0) -> list[Repetition]:
        """``count`` timed repetitions, tagged with ``round_index``, after ``settle``
        un-timed calls (the round's own warm-up, outside every figure)."""
        done: list[Repetition] = []
        with self.torch.inference_mode():
            for _ in range(settle):
                self.model.generate(**self.inputs, **self.kwargs)
                self.clock.synchronize()
        started = time.perf_counter()
        with self.torch.inference_mode():
            for _ in range(count):
                before = self._energy()
                rep = _one_repetition(self.model, self.inputs, self.kwargs, self.clock, self.marks)
                after = self._energy()
                rep.round = round_index
                if before is not None and after is not None:
                    rep.energy_mj = after - before
                    self._energy_total = (self._energy_total or 0.0) + rep.energy_mj
                done.append(rep)
                self.run.repetitions.append(rep)
        self.run.seconds += time.perf_counter() - started
        self.run.energy_mj = self._energy_total
        return done

    def _energy(self) -> float | None:
        if self.energy is None:
            return None
        reading = self.energy()
        if reading.value is None:
            self.energy_reason = reading.reason
        return reading.value

    def split(self) -> None:
        """Profile one generate(): GPU kernel time against host time (never loses figures)."""
        from pytest_gpuinfer.bench.split import gpu_busy_split

        try:
            with self.torch.inference_mode():
                self.run.time_split = gpu_busy_split(
                    self.model, self.inputs, self.kwargs, self.device, self.run.workload
                )
        except Exception as error:
            if is_oom(error):
                raise
            reason = f"profiling failed: {type(error).__name__}: {_first_line(error)}"
            self.run.time_split = {"available": False, "reason": reason}

    def oom(self, error: BaseException) -> None:
        """End this workload as out of memory, keeping what was measured."""
        self.run.status = "oom"
        done = len(self.run.repetitions)
        self.run.reason = f"out of memory after {done} repetition(s): {_first_line(error)}"
        if self.clock.cuda:
            gc.collect()
            self.torch.cuda.empty_cache()

    def finish(self) -> WorkloadRun:
        gc.enable()
        _read_memory(self.run, self.clock.cuda)
        if self.run.energy_mj is None and self.energy_reason:
            self.run.energy_reason = self.energy_reason
        return self.run


def run_workload(
    model: Any,
    mode: str,
    workload: Workload,
    policy: Repetitions,
    *,
    energy: Callable[[], Reading] | None = None,
    on_repetition: Callable[[int, Repetition, float], None] | None = None,
    time_split: bool = False,
    compiled: bool = False,
) -> WorkloadRun:
    """In this process (the pytest fixture): warm up, then repeat generate() until
    ``policy`` is met; an out-of-memory ends the run with status "oom" and keeps what was
    measured before it."""
    session = WorkloadSession(model, workload, energy=energy, compiled=compiled)
    try:
        session.warm_up(policy.warmup)
        started = time.perf_counter()
        while (
            len(session.run.repetitions) < policy.min_count
            or time.perf_counter() - started < policy.min_seconds
        ):
            (rep,) = session.measure(1, len(session.run.repetitions))
            if on_repetition is not None:
                on_repetition(len(session.run.repetitions), rep, session.run.seconds)
        if time_split:
            session.split()
    except Exception as error:
        if not is_oom(error):
            raise
        session.oom(error)
    return session.finish()


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

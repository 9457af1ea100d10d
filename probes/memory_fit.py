"""Judge whether a model's workload fits the GPUs (or a ``max_memory`` budget), per mode.

The estimate itself lives beside this module: weights in :mod:`probes.memory_weights`,
the workload's peak in :mod:`probes.memory_workload`, device maps in
:mod:`probes.memory_plan`. This module compares the predicted peak with what each GPU
offers after its CUDA context, and searches the longest sequence and the largest batch
that still fit. Importing it stays cheap (no torch).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_gpuinfer.probes.alloc_conf import AllocatorConfig
from pytest_gpuinfer.probes.errors import InputError
from pytest_gpuinfer.probes.memory_plan import (
    QUANTIZER_MAX_MEMORY_FACTOR,
    DevicePlan,
    plan_device_maps,
)
from pytest_gpuinfer.probes.memory_units import NAMED_DEVICES, MemoryKey, format_bytes
from pytest_gpuinfer.probes.memory_weights import MemoryEstimate, ModeWeights, estimate_model_memory
from pytest_gpuinfer.probes.memory_workload import (
    CUDA_CONTEXT_BYTES,
    UNMODELLED_MARGIN,
    Workload,
    WorkloadEstimate,
    estimate_workload,
)
from pytest_gpuinfer.probes.modes import QUANTIZED_MODES
from pytest_gpuinfer.probes.report import GPUInfo, Status

__all__ = [
    "CUDA_CONTEXT_BYTES",
    "QUANTIZER_MAX_MEMORY_FACTOR",
    "DevicePlan",
    "MemoryEstimate",
    "MemoryFit",
    "ModeFit",
    "ModeWeights",
    "Workload",
    "WorkloadEstimate",
    "check_max_memory",
    "estimate_model_memory",
    "estimate_workload_of",
    "fit_on_devices",
    "needed_bytes",
]

WEIGHTS_ONLY_HEADROOM = 0.10
"""Room asked for on top of the weights when the workload cannot be estimated (a config
without layer sizes): activations and a short KV cache at batch 1. A floor, not a fit."""

MAX_SEARCH_SEQ_LEN = 1 << 20
MAX_SEARCH_BATCH = 1 << 16


@dataclass
class GPUFit:
    """One GPU's answer for one mode: does the workload fit, and how far could it go."""

    gpu: int
    usable_bytes: int | None
    """Free memory after the CUDA context (capped by --max-memory); None: unknown."""
    fits: bool | None
    max_seq_len: int | None
    """Longest prompt at this batch that fits; None: not even 1 token (or unknown)."""
    max_batch_size: int | None
    """Largest batch at this length that fits; None: not even 1 (or unknown)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu,
            "usable_bytes": self.usable_bytes,
            "fits": self.fits,
            "max_seq_len": self.max_seq_len,
            "max_batch_size": self.max_batch_size,
        }


@dataclass
class ModeFit:
    """Whether one mode's workload fits on the GPUs, and why."""

    mode: str
    status: Status
    """SUPPORTED: one GPU's free memory; DEGRADED: only split across GPUs, offloaded, or
    once memory is freed; UNSUPPORTED: none of that; UNKNOWN: memory not read."""
    placement: str
    """"single-gpu", "multi-gpu", "offload", "needs-free-memory", "none" or "unknown"."""
    weights_bytes: int
    needed_bytes: int
    """The predicted peak without the CUDA context: what a GPU must offer after it."""
    gpus: list[int] = field(default_factory=list)
    """Indices of the GPUs the placement uses."""
    reason: str = ""
    workload: WorkloadEstimate | None = None
    per_gpu: list[GPUFit] = field(default_factory=list)

    @property
    def best(self) -> GPUFit | None:
        known = [g for g in self.per_gpu if g.usable_bytes is not None]
        return max(known, key=lambda g: g.usable_bytes or 0) if known else None

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "mode": self.mode,
            "status": self.status.value,
            "placement": self.placement,
            "weights_bytes": self.weights_bytes,
            "needed_bytes": self.needed_bytes,
            "gpus": list(self.gpus),
            "reason": self.reason,
            "workload": self.workload.to_dict() if self.workload else None,
            "max_seq_len": best.max_seq_len if best else None,
            "max_batch_size": best.max_batch_size if best else None,
            "per_gpu": [g.to_dict() for g in self.per_gpu],
        }


@dataclass
class MemoryFit:
    """Per-mode fit of a model's workload on a set of GPUs, with device plans when a
    budget is given."""

    estimate: MemoryEstimate
    fits: dict[str, ModeFit]
    workload: Workload = field(default_factory=Workload)
    device_plans: dict[str, DevicePlan] = field(default_factory=dict)
    max_memory: dict[MemoryKey, int] | None = None
    cuda_context_bytes: int = CUDA_CONTEXT_BYTES
    warnings: list[str] = field(default_factory=list)
    allocator: AllocatorConfig = field(default_factory=AllocatorConfig)
    """The allocator configuration the fragmentation allowance was scaled by."""

    def rows(self) -> list[tuple[str, str, str, str]]:
        """Table rows: (mode, peak, fits where, reason)."""
        rows = []
        for mode, fit in self.fits.items():
            where = _PLACEMENT_LABELS.get(fit.placement, fit.placement)
            if fit.gpus and fit.placement in ("single-gpu", "needs-free-memory"):
                where = f"{where} (GPU {fit.gpus[0]})"
            best = fit.best
            if best is not None and fit.workload is not None:
                seq = best.max_seq_len
                batch = best.max_batch_size
                where += (
                    f"; longest seq at batch {self.workload.batch_size}: "
                    f"{seq if seq is not None else 'none'}, largest batch at seq "
                    f"{self.workload.seq_len}: {batch if batch is not None else 'none'}"
                )
            plan = self.device_plans.get(mode)
            if plan is not None:
                where = f"{where}; plan: " + ", ".join(
                    f"{device} {format_bytes(v['bytes'])}" for device, v in plan.devices.items()
                )
                if plan.note:
                    where += f" ({plan.note})"
            peak = fit.workload.peak_bytes if fit.workload else fit.needed_bytes
            rows.append((mode, format_bytes(peak), where, fit.reason))
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "estimate": self.estimate.to_dict(),
            "workload": self.workload.to_dict(),
            "margins": {
                "cuda_context_bytes": self.cuda_context_bytes,
                "quantizer_max_memory_factor": QUANTIZER_MAX_MEMORY_FACTOR,
                "weights_only_headroom": WEIGHTS_ONLY_HEADROOM,
                "unmodelled_margin": UNMODELLED_MARGIN,
                "fragmentation_scale": self.allocator.fragmentation_scale,
                "fragmentation_source": self.allocator.fragmentation_source,
            },
            "allocator": self.allocator.to_dict(),
            "max_memory": (
                None if self.max_memory is None else {str(k): v for k, v in self.max_memory.items()}
            ),
            "fits": {mode: fit.to_dict() for mode, fit in self.fits.items()},
            "device_plans": {mode: plan.to_dict() for mode, plan in self.device_plans.items()},
            "warnings": list(self.warnings),
        }


_PLACEMENT_LABELS = {
    "single-gpu": "one GPU",
    "multi-gpu": "split across GPUs",
    "offload": "with cpu/disk offload",
    "needs-free-memory": "one GPU once memory is freed",
    "none": "no",
    "unknown": "unknown",
}


def estimate_workload_of(
    source: str | os.PathLike[str],
    mode: str,
    batch_size: int,
    seq_len: int,
    new_tokens: int = 0,
) -> WorkloadEstimate:
    """The predicted peak of ``generate()`` for the model at ``source`` in ``mode``:
    the one call the loader and the marker need (``.peak_bytes``, ``.parts()``).

    Raises:
        InputError: bad source, mode or workload, or a config without layer sizes.
    """
    workload = Workload(batch_size, seq_len, new_tokens)
    estimate = estimate_model_memory(source, (mode,))
    return estimate_workload(estimate, mode, workload)


def needed_bytes(mode: str, weights_bytes: int) -> int:
    """Weights plus headroom, the floor used when the workload cannot be estimated."""
    if mode in QUANTIZED_MODES:
        return math.ceil(weights_bytes / QUANTIZER_MAX_MEMORY_FACTOR)
    return math.ceil(weights_bytes * (1 + WEIGHTS_ONLY_HEADROOM))


def gpu_key(gpu: GPUInfo) -> int:
    """The ordinal a max_memory key names this GPU by."""
    return gpu.cuda_ordinal if gpu.cuda_ordinal is not None else gpu.index


def check_max_memory(max_memory: Mapping[MemoryKey, int], gpus: Iterable[GPUInfo]) -> None:
    """Refuse a budget for a GPU the judged machine (or profile) does not have.

    Raises:
        InputError: one line naming the GPU and the ones that exist.
    """
    have = sorted({gpu_key(g) for g in gpus})
    for key in max_memory:
        if isinstance(key, int) and key not in have:
            exist = (
                f"GPUs {', '.join(map(str, have))}"
                if len(have) > 1
                else (f"GPU {have[0]}" if have else "no GPU")
            )
            raise InputError(
                f"--max-memory gives a budget to GPU {key}, but the judged machine has "
                f"{exist}: expected budgets for existing GPUs, 'cpu' or 'disk'"
            )


def fit_on_devices(
    estimate: MemoryEstimate,
    devices: Iterable[GPUInfo],
    max_memory: Mapping[MemoryKey, int] | None = None,
    workload: Workload | None = None,
    *,
    plan: bool = True,
    allocator: AllocatorConfig | None = None,
) -> MemoryFit:
    """Judge, per mode, whether ``workload`` (default: :class:`Workload`'s defaults) fits on
    ``devices``; with ``max_memory`` (from :func:`probes.memory_units.parse_max_memory`)
    each GPU's room is capped by its budget, unlisted GPUs are not used, and a device map
    is planned too (``plan=False`` skips it). ``allocator`` (from
    :func:`probes.alloc_conf.allocator_config`; default: torch's defaults) scales the
    fragmentation allowance.

    Raises:
        InputError: ``max_memory`` names a GPU that is not among ``devices``.
    """
    gpus = list(devices)
    work = workload or Workload()
    config = allocator or AllocatorConfig()
    scale = config.fragmentation_scale
    budget = dict(max_memory) if max_memory is not None else None
    if budget is not None:
        check_max_memory(budget, gpus)
    fits: dict[str, ModeFit] = {}
    warnings: list[str] = []
    for mode, weights in estimate.modes.items():
        predicted: WorkloadEstimate | None = None
        if estimate.shape is not None:
            predicted = estimate_workload(estimate, mode, work, fragmentation_scale=scale)
            warnings.extend(n for n in predicted.notes if n not in warnings)
        elif estimate.shape_error and not warnings:
            warnings.append(f"only the weights are judged: {estimate.shape_error}")
        fits[mode] = _fit_mode(
            mode, weights.total_bytes, predicted, gpus, budget, estimate, work, scale
        )
    plans = plan_device_maps(estimate, budget) if (budget is not None and plan) else {}
    return MemoryFit(
        estimate=estimate,
        fits=fits,
        workload=work,
        device_plans=plans,
        max_memory=budget,
        warnings=[*warnings, *([] if scale == 1.0 else config.notes())],
        allocator=config,
    )


def _room(gpu: GPUInfo, memory: int | None, budget: dict[MemoryKey, int] | None) -> int | None:
    usable = None if memory is None else max(0, memory - CUDA_CONTEXT_BYTES)
    if budget is not None:
        cap = budget.get(gpu_key(gpu), 0)
        usable = cap if usable is None else min(usable, cap)
    return usable


def _memory_now(gpu: GPUInfo) -> int | None:
    # What the searches measure against: free memory, or the total when free is unknown.
    return gpu.free_memory_bytes if gpu.free_memory_bytes is not None else gpu.total_memory_bytes


def _unknown_reason(gpu: GPUInfo, field_name: str) -> str:
    why = gpu.unknown.get(field_name) or "not reported"
    what = "free" if field_name == "free_memory_bytes" else "total"
    return f"GPU {gpu.index} {what} memory unknown ({why})"


def _largest(fits: Callable[[int], bool], upper: int) -> int | None:
    """The largest n in [1, upper] with fits(n), for a monotone fits; None if not 1."""
    if not fits(1):
        return None
    low, high = 1, 2
    while high <= upper and fits(high):
        low, high = high, high * 2
    high = min(high, upper + 1)
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return low


def _per_gpu(
    estimate: MemoryEstimate,
    mode: str,
    work: Workload,
    usable: int | None,
    gpu: int,
    scale: float = 1.0,
) -> GPUFit:
    if usable is None or estimate.shape is None:
        return GPUFit(gpu, usable, None, None, None)

    def peak(batch: int, seq: int) -> int:
        return estimate_workload(
            estimate, mode, Workload(batch, seq, work.new_tokens), fragmentation_scale=scale
        ).peak_reserved_bytes

    positions = estimate.shape.max_positions
    seq_cap = MAX_SEARCH_SEQ_LEN if positions is None else max(1, positions - work.new_tokens)
    return GPUFit(
        gpu=gpu,
        usable_bytes=usable,
        fits=peak(work.batch_size, work.seq_len) <= usable,
        max_seq_len=_largest(lambda s: peak(work.batch_size, s) <= usable, seq_cap),
        max_batch_size=_largest(lambda b: peak(b, work.seq_len) <= usable, MAX_SEARCH_BATCH),
    )


def _fit_mode(
    mode: str,
    weights: int,
    predicted: WorkloadEstimate | None,
    gpus: list[GPUInfo],
    budget: dict[MemoryKey, int] | None,
    estimate: MemoryEstimate,
    work: Workload,
    scale: float = 1.0,
) -> ModeFit:
    need = predicted.peak_reserved_bytes if predicted else needed_bytes(mode, weights)
    if predicted is not None:
        wants = f"peak {format_bytes(predicted.peak_bytes)} at {predicted.peak_moment}"
        if not predicted.confirmed:
            wants += (
                f" (unconfirmed: no workload model for {estimate.model_type!r}, "
                f"{format_bytes(predicted.margin)} margin included; measure with: "
                f"{predicted.measure_with})"
            )
    else:
        wants = f"needs {format_bytes(need)} ({format_bytes(weights)} weights + headroom)"
    if budget is not None:
        wants += " under --max-memory"
    offload = budget is not None and any(k in NAMED_DEVICES for k in budget)
    used_gpus = [g for g in gpus if budget is None or gpu_key(g) in budget]

    def verdict(status: Status, placement: str, why: str, used: Iterable[int] = ()) -> ModeFit:
        return ModeFit(
            mode=mode,
            status=status,
            placement=placement,
            weights_bytes=weights,
            needed_bytes=need,
            gpus=list(used),
            reason=f"{wants}; {why}",
            workload=predicted,
            per_gpu=[
                _per_gpu(estimate, mode, work, _room(g, _memory_now(g), budget), g.index, scale)
                for g in used_gpus
            ],
        )

    if not used_gpus:
        why = "no GPU found" if not gpus else "--max-memory gives no GPU a budget"
        if offload:
            return verdict(
                Status.DEGRADED, "offload", f"{why}; runs from cpu/disk per --max-memory (slow)"
            )
        return verdict(Status.UNSUPPORTED, "none", why)

    free = [(gpu, _room(gpu, gpu.free_memory_bytes, budget)) for gpu in used_gpus]
    total = [(gpu, _room(gpu, gpu.total_memory_bytes, budget)) for gpu in used_gpus]
    room = "free after CUDA context" + (" within --max-memory" if budget is not None else "")

    fitting = [(gpu, avail) for gpu, avail in free if avail is not None and avail >= need]
    if fitting:
        gpu, avail = max(fitting, key=lambda pair: pair[1])
        why = f"GPU {gpu.index} has {format_bytes(avail)} {room}"
        return verdict(Status.SUPPORTED, "single-gpu", why, [gpu.index])

    if len(used_gpus) > 1 and all(avail is not None for _, avail in free):
        together = sum(avail or 0 for _, avail in free)
        if together >= need:
            why = (
                f"no single GPU has room, {len(used_gpus)} GPUs have {format_bytes(together)} "
                f"{room} together (device_map='auto')"
            )
            return verdict(Status.DEGRADED, "multi-gpu", why, [g.index for g in used_gpus])

    if offload:
        biggest = max((a or 0 for _, a in free), default=0)
        why = (
            f"the GPUs have at most {format_bytes(biggest)} {room}; the rest runs from "
            "cpu/disk per --max-memory (slow)"
        )
        return verdict(Status.DEGRADED, "offload", why, [g.index for g in used_gpus])

    roomy = [(gpu, avail) for gpu, avail in total if avail is not None and avail >= need]
    if roomy:
        gpu, avail = max(roomy, key=lambda pair: pair[1])
        now = "unknown" if gpu.free_memory_bytes is None else format_bytes(gpu.free_memory_bytes)
        why = (
            f"GPU {gpu.index} has {format_bytes(avail)} in total after CUDA context "
            f"but {now} free now"
        )
        return verdict(Status.DEGRADED, "needs-free-memory", why, [gpu.index])

    unknown = [_unknown_reason(gpu, "free_memory_bytes") for gpu, a in free if a is None]
    unknown += [_unknown_reason(gpu, "total_memory_bytes") for gpu, a in total if a is None]
    if unknown:
        return verdict(Status.UNKNOWN, "unknown", "; ".join(dict.fromkeys(unknown)))

    biggest_gpu = max(used_gpus, key=lambda g: g.total_memory_bytes or 0)
    why = (
        f"largest GPU {biggest_gpu.index} has {format_bytes(biggest_gpu.free_memory_bytes or 0)} "
        f"free, {format_bytes(biggest_gpu.total_memory_bytes or 0)} total"
    )
    if budget is not None:
        why += f", a budget of {format_bytes(budget.get(gpu_key(biggest_gpu), 0))}"
    together_total = sum(avail or 0 for _, avail in total)
    if len(used_gpus) > 1 and together_total >= need:
        why += f"; {len(used_gpus)} GPUs hold {format_bytes(together_total)} in total"
    return verdict(Status.UNSUPPORTED, "none", why)

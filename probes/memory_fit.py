"""How much memory a model's weights take in each mode, and where they would fit.

The model is built on the meta device from its config alone, so nothing is allocated
and no weights are read; sizes come from parameter shapes. Quantized modes follow what
transformers' bitsandbytes integration really converts: only plain ``nn.Linear`` (and
GPT-2's ``Conv1D``) outside the modules it keeps in full precision.

torch, transformers, accelerate and huggingface_hub are imported inside functions:
importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_gpuinfer.probes.bnb_modules import kept_in_full_precision, module_matches, tied_groups
from pytest_gpuinfer.probes.errors import InputError
from pytest_gpuinfer.probes.memory_units import MemoryKey, format_bytes
from pytest_gpuinfer.probes.modes import MODE_INFO, QUANTIZED_MODES
from pytest_gpuinfer.probes.report import MODES, GPUInfo, Status
from pytest_gpuinfer.probes.sources import read_config, resolve_config_path

CUDA_CONTEXT_BYTES = 500 * 2**20
"""Taken off every GPU's memory before weights: the CUDA context, cuBLAS workspace and
allocator slack a process needs before its first tensor (300-600 MiB on recent drivers)."""

ACTIVATION_HEADROOM = 0.10
"""Extra room asked for on top of the weights, as a fraction of them: activations and a
short KV cache at batch 1. Long contexts or big batches need more; this is a floor."""

QUANTIZER_MAX_MEMORY_FACTOR = 0.90
"""transformers' bitsandbytes quantizers scale every max_memory entry by this before
planning a device map (room for buffers made while quantizing)."""


NF4_BLOCK_SIZE = 64
"""bitsandbytes' default 4-bit block: one absmax per 64 weights."""
_NF4_NESTED_BLOCK_SIZE = 256
_NF4_CODE_BYTES = 16 * 4  # the 16-entry fp32 lookup table each 4-bit weight keeps
_DYNAMIC_CODE_BYTES = 256 * 4  # the 8-bit map double quantisation keeps per weight

# Modes whose weights have 16-bit bytes (the fastpath only swaps attention).
_SIXTEEN_BIT = {
    m.name: m.weight_dtype
    for m in MODE_INFO.values()
    if not m.quantized and m.weight_dtype in ("float16", "bfloat16")
}


@dataclass
class ModeWeights:
    """The bytes one mode's weights take in GPU memory."""

    mode: str
    parameter_bytes: int
    buffer_bytes: int
    quantized_parameters: int = 0
    """Parameters stored in 8 or 4 bits in this mode (0 for unquantized modes)."""
    note: str = ""

    @property
    def total_bytes(self) -> int:
        return self.parameter_bytes + self.buffer_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "total_bytes": self.total_bytes,
            "parameter_bytes": self.parameter_bytes,
            "buffer_bytes": self.buffer_bytes,
            "quantized_parameters": self.quantized_parameters,
            "note": self.note,
        }


@dataclass
class MemoryEstimate:
    """Parameter counts and per-mode weight bytes of one model, from its config."""

    source: str
    config_path: str
    model_type: str
    model_class: str
    parameter_count: int
    linear_parameters: int
    embedding_parameters: int
    other_parameters: int
    buffer_count: int
    quantizable_linear_parameters: int
    """Weights of the Linear layers that int8/nf4 convert (lm_head and friends excluded)."""
    kept_in_full_precision: list[str]
    """Module patterns transformers' bitsandbytes integration leaves unquantized."""
    tied_parameters: list[list[str]]
    no_split_modules: list[str]
    modes: dict[str, ModeWeights]
    meta_model: Any = field(default=None, repr=False, compare=False)
    """The meta-device model, kept for device-map planning; not serialized."""

    def weights_bytes(self, mode: str) -> int:
        return self.modes[mode].total_bytes

    def rows(self) -> list[tuple[str, str, str]]:
        """Table rows: (mode, weights, note)."""
        return [(m.mode, format_bytes(m.total_bytes), m.note) for m in self.modes.values()]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "config_path": self.config_path,
            "model_type": self.model_type,
            "model_class": self.model_class,
            "parameter_count": self.parameter_count,
            "linear_parameters": self.linear_parameters,
            "embedding_parameters": self.embedding_parameters,
            "other_parameters": self.other_parameters,
            "buffer_count": self.buffer_count,
            "quantizable_linear_parameters": self.quantizable_linear_parameters,
            "kept_in_full_precision": sorted(self.kept_in_full_precision),
            "tied_parameters": [sorted(group) for group in self.tied_parameters],
            "no_split_modules": sorted(self.no_split_modules),
            "modes": {mode: weights.to_dict() for mode, weights in self.modes.items()},
        }


@dataclass
class ModeFit:
    """Whether one mode's weights fit on the GPUs, and why."""

    mode: str
    status: Status
    """SUPPORTED: one GPU's free memory; DEGRADED: only split across GPUs, or only once
    memory is freed; UNSUPPORTED: not even the GPUs' total; UNKNOWN: memory not read."""
    placement: str
    """"single-gpu", "multi-gpu", "needs-free-memory", "none" or "unknown"."""
    weights_bytes: int
    needed_bytes: int
    """Weights plus headroom, what a GPU (or the GPUs together) must offer after context."""
    gpus: list[int] = field(default_factory=list)
    """Indices of the GPUs the placement uses."""
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "status": self.status.value,
            "placement": self.placement,
            "weights_bytes": self.weights_bytes,
            "needed_bytes": self.needed_bytes,
            "gpus": list(self.gpus),
            "reason": self.reason,
        }


@dataclass
class DevicePlan:
    """The device map accelerate would plan for one mode under a max_memory budget."""

    mode: str
    max_memory: dict[MemoryKey, int]
    """The budget as planned, after the quantizers' 0.90 factor for int8/nf4."""
    devices: dict[str, dict[str, int]]
    """str(device) -> {"bytes": ..., "modules": ...}, in device order."""
    device_map: dict[str, int | str]
    """accelerate's raw map: module name ("" = whole model) -> device."""
    needs_fp32_cpu_offload: bool = False
    note: str = ""

    @property
    def offloaded(self) -> bool:
        return any(device in ("cpu", "disk") for device in self.device_map.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "max_memory": {str(k): v for k, v in self.max_memory.items()},
            "devices": {k: dict(v) for k, v in self.devices.items()},
            "device_map": dict(self.device_map),
            "offloaded": self.offloaded,
            "needs_fp32_cpu_offload": self.needs_fp32_cpu_offload,
            "note": self.note,
        }


@dataclass
class MemoryFit:
    """Per-mode fit of a model on a set of GPUs, with device plans when a budget is given."""

    estimate: MemoryEstimate
    fits: dict[str, ModeFit]
    device_plans: dict[str, DevicePlan] = field(default_factory=dict)
    max_memory: dict[MemoryKey, int] | None = None
    cuda_context_bytes: int = CUDA_CONTEXT_BYTES
    activation_headroom: float = ACTIVATION_HEADROOM

    def rows(self) -> list[tuple[str, str, str, str]]:
        """Table rows: (mode, weights, fits where, reason)."""
        rows = []
        for mode, fit in self.fits.items():
            where = _PLACEMENT_LABELS.get(fit.placement, fit.placement)
            if fit.gpus and fit.placement in ("single-gpu", "needs-free-memory"):
                where = f"{where} (GPU {fit.gpus[0]})"
            plan = self.device_plans.get(mode)
            if plan is not None:
                where = f"{where}; plan: " + ", ".join(
                    f"{device} {format_bytes(v['bytes'])}" for device, v in plan.devices.items()
                )
            rows.append((mode, format_bytes(fit.weights_bytes), where, fit.reason))
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "estimate": self.estimate.to_dict(),
            "margins": {
                "cuda_context_bytes": self.cuda_context_bytes,
                "activation_headroom": self.activation_headroom,
                "quantizer_max_memory_factor": QUANTIZER_MAX_MEMORY_FACTOR,
            },
            "max_memory": (
                None if self.max_memory is None else {str(k): v for k, v in self.max_memory.items()}
            ),
            "fits": {mode: fit.to_dict() for mode, fit in self.fits.items()},
            "device_plans": {mode: plan.to_dict() for mode, plan in self.device_plans.items()},
        }


_PLACEMENT_LABELS = {
    "single-gpu": "one GPU",
    "multi-gpu": "split across GPUs",
    "needs-free-memory": "one GPU once memory is freed",
    "none": "no",
    "unknown": "unknown",
}


# --------------------------------------------------------------------------- estimate


def estimate_model_memory(
    source: str | os.PathLike[str],
    modes: Iterable[str] = MODES,
    *,
    nf4_double_quant: bool = False,
) -> MemoryEstimate:
    """Estimate the weight memory of the model at ``source`` in each of ``modes``.

    ``source`` is a model directory, a config.json, or a hub id already cached locally.
    Nothing is downloaded or allocated: the model is built on the meta device.
    ``nf4_double_quant`` mirrors ``bnb_4bit_use_double_quant`` for the nf4 figure.

    Raises:
        InputError: bad source or config, or an unknown mode.
    """
    wanted = list(dict.fromkeys(modes))
    for mode in wanted:
        if mode not in MODES:
            raise InputError(f"mode {mode!r} is not known: expected one of {', '.join(MODES)}")
    config_path = resolve_config_path(source)
    data, model_type = read_config(config_path)
    model = _build_meta_model(config_path, data, model_type)
    return _measure(os.fspath(source), config_path, model_type, model, wanted, nf4_double_quant)


def _build_meta_model(config_path: Path, data: dict[str, Any], model_type: str) -> Any:
    import torch
    import transformers
    from accelerate import init_empty_weights
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        raise InputError(
            f"config '{config_path}' has model_type '{model_type}', which transformers "
            f"{transformers.__version__} does not know: expected a built-in model type "
            "such as 'llama' or 'gpt2'"
        )
    try:
        config = CONFIG_MAPPING[model_type].from_dict(data)
    except Exception as error:  # config classes raise ValueError, TypeError, KeyError...
        raise InputError(
            f"config '{config_path}' is not a valid {model_type} config: {_first_line(error)}"
        ) from None

    candidates: list[Any] = []
    for name in data.get("architectures") or []:
        cls = getattr(transformers, str(name), None) if isinstance(name, str) else None
        if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel):
            candidates.append(cls)
    candidates += [transformers.AutoModelForCausalLM, transformers.AutoModel]

    from pytest_gpuinfer.probes.hf_calls import dtype_keyword

    dtype_kwarg = {dtype_keyword(transformers.__version__): torch.float32}
    last_error: Exception | None = None
    with _quiet_loggers(), init_empty_weights(include_buffers=True):
        for cls in candidates:
            try:
                if hasattr(cls, "_model_mapping"):  # an Auto class
                    return cls.from_config(config, **dtype_kwarg)
                return cls._from_config(config, **dtype_kwarg)
            except (ValueError, KeyError, TypeError, AttributeError, ImportError) as error:
                last_error = error
    raise InputError(
        f"config '{config_path}' cannot be built into a model: {_first_line(last_error)}"
    )


def _first_line(error: BaseException | None) -> str:
    text = str(error).strip() if error is not None else ""
    return (text.splitlines() or [type(error).__name__])[0][:200]


@contextlib.contextmanager
def _quiet_loggers() -> Iterator[None]:
    # Building on meta and planning for GPUs this machine may lack makes transformers
    # and accelerate warn ("Device 0 is not available"); the estimate stands regardless.
    names = ("transformers", "accelerate")
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in names]
    for logger, _ in saved:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


@dataclass
class _Tensor:
    name: str
    numel: int
    kind: str  # "linear", "embedding" or "other"
    quantizable: bool  # a weight int8/nf4 convert
    out_features: int  # rows of a quantizable weight, for int8's per-row scale
    keep_fp32: bool  # in _keep_in_fp32_modules: fp32 when loading fp16
    keep_fp32_strict: bool  # in _keep_in_fp32_modules_strict: fp32 for fp16 and bf16


def _tensors(model: Any, kept: list[str]) -> list[_Tensor]:
    import torch
    from transformers.pytorch_utils import Conv1D

    keep_fp32 = list(getattr(model, "_keep_in_fp32_modules", None) or ())
    keep_strict = list(getattr(model, "_keep_in_fp32_modules_strict", None) or ())
    seen: set[int] = set()
    tensors = []
    for module_name, module in model.named_modules():
        # bitsandbytes swaps exactly these types, not subclasses of nn.Linear.
        convertible = type(module) is torch.nn.Linear or isinstance(module, Conv1D)
        if isinstance(module, torch.nn.Linear | Conv1D):
            kind = "linear"
        elif isinstance(module, torch.nn.Embedding):
            kind = "embedding"
        else:
            kind = "other"
        skipped = module_matches(module_name, kept)
        for local, parameter in module.named_parameters(recurse=False):
            # Tied parameters are one tensor: count them once, under their first owner.
            if id(parameter) in seen:
                continue
            seen.add(id(parameter))
            name = f"{module_name}.{local}" if module_name else local
            quantizable = convertible and local == "weight" and not skipped
            if quantizable and isinstance(module, Conv1D):
                out_features = int(parameter.shape[1])  # Conv1D stores (in, out)
            else:
                out_features = int(parameter.shape[0]) if parameter.dim() else 1
            tensors.append(
                _Tensor(
                    name=name,
                    numel=int(parameter.numel()),
                    kind=kind,
                    quantizable=quantizable,
                    out_features=out_features,
                    keep_fp32=module_matches(module_name, keep_fp32) if keep_fp32 else False,
                    keep_fp32_strict=(
                        module_matches(module_name, keep_strict) if keep_strict else False
                    ),
                )
            )
    return tensors


def _nf4_weight_bytes(numel: int, double_quant: bool) -> int:
    packed = (numel + 1) // 2
    blocks = math.ceil(numel / NF4_BLOCK_SIZE)
    if double_quant:
        # absmax re-quantised to uint8 in blocks of 256, each with an fp32 scale, plus the
        # 8-bit code table and one fp32 offset.
        nested = math.ceil(blocks / _NF4_NESTED_BLOCK_SIZE)
        absmax = blocks + nested * 4 + _DYNAMIC_CODE_BYTES + 4
    else:
        absmax = blocks * 4
    return packed + absmax + _NF4_CODE_BYTES


def _mode_bytes(
    mode: str, tensors: list[_Tensor], buffer_bytes: int, double_quant: bool
) -> ModeWeights:
    if mode == "fp32":
        return ModeWeights(mode, sum(t.numel for t in tensors) * 4, buffer_bytes)
    total = 0
    quantized = 0
    for t in tensors:
        if mode in QUANTIZED_MODES and t.quantizable:
            quantized += t.numel
            if mode == "int8":
                # int8 weight plus LLM.int8's fp32 scale per output row (SCB).
                total += t.numel + t.out_features * 4
            else:
                total += _nf4_weight_bytes(t.numel, double_quant)
        elif t.keep_fp32_strict or (t.keep_fp32 and mode != "bf16"):
            # quantized modes load the rest in fp16, so _keep_in_fp32_modules applies.
            total += t.numel * 4
        else:
            total += t.numel * 2
    note = {
        "fp16": "",
        "bf16": "",
        "fastpath": "same weights as fp16: the attention implementation changes no weights",
        "int8": "Linear weights int8 + fp32 scale per row; embeddings, norms, lm_head 16-bit",
        "nf4": (
            "Linear weights 4-bit + "
            + ("double-quantized absmax" if double_quant else "fp32 absmax per 64")
            + "; embeddings, norms, lm_head 16-bit"
        ),
    }[mode]
    return ModeWeights(mode, total, buffer_bytes, quantized, note)


def _measure(
    source: str,
    config_path: Path,
    model_type: str,
    model: Any,
    modes: list[str],
    double_quant: bool,
) -> MemoryEstimate:
    tied = tied_groups(model)
    kept = kept_in_full_precision(model, tied)
    tensors = _tensors(model, kept)
    # Buffers keep the dtype they were built with (rotary inv_freq is fp32 whatever the
    # load dtype), so they count the same in every mode. Non-persistent ones included:
    # they sit in GPU memory all the same.
    buffers = list(model.named_buffers())
    buffer_bytes = sum(int(b.numel()) * b.element_size() for _, b in buffers)
    return MemoryEstimate(
        source=source,
        config_path=str(config_path),
        model_type=model_type,
        model_class=type(model).__name__,
        parameter_count=sum(t.numel for t in tensors),
        linear_parameters=sum(t.numel for t in tensors if t.kind == "linear"),
        embedding_parameters=sum(t.numel for t in tensors if t.kind == "embedding"),
        other_parameters=sum(t.numel for t in tensors if t.kind == "other"),
        buffer_count=len(buffers),
        quantizable_linear_parameters=sum(t.numel for t in tensors if t.quantizable),
        kept_in_full_precision=kept,
        tied_parameters=[g for g in tied if g],
        no_split_modules=sorted(getattr(model, "_no_split_modules", None) or ()),
        modes={m: _mode_bytes(m, tensors, buffer_bytes, double_quant) for m in modes},
        meta_model=model,
    )


# --------------------------------------------------------------------------- fit


def fit_on_devices(
    estimate: MemoryEstimate,
    devices: Iterable[GPUInfo],
    max_memory: Mapping[MemoryKey, int] | None = None,
) -> MemoryFit:
    """Judge, per mode, whether the weights fit on ``devices``; plan a device map too when
    ``max_memory`` (from :func:`probes.memory_units.parse_max_memory`) is given.

    Each GPU first loses :data:`CUDA_CONTEXT_BYTES`; the weights then need
    ``1 + ACTIVATION_HEADROOM`` times their size, or ``1 / 0.90`` times for int8/nf4,
    matching the factor transformers' quantizers apply to every max_memory entry.
    """
    gpus = list(devices)
    fits = {
        mode: _fit_mode(mode, weights.total_bytes, gpus) for mode, weights in estimate.modes.items()
    }
    plans: dict[str, DevicePlan] = {}
    budget = dict(max_memory) if max_memory is not None else None
    if budget is not None:
        plans = _plan_device_maps(estimate, budget)
    return MemoryFit(estimate=estimate, fits=fits, device_plans=plans, max_memory=budget)


def needed_bytes(mode: str, weights_bytes: int) -> int:
    """Weights plus headroom: what a GPU must offer after its CUDA context."""
    if mode in QUANTIZED_MODES:
        return math.ceil(weights_bytes / QUANTIZER_MAX_MEMORY_FACTOR)
    return math.ceil(weights_bytes * (1 + ACTIVATION_HEADROOM))


def _usable(memory: int | None) -> int | None:
    return None if memory is None else max(0, memory - CUDA_CONTEXT_BYTES)


def _unknown_reason(gpu: GPUInfo, field_name: str) -> str:
    why = gpu.unknown.get(field_name) or "not reported"
    what = "free" if field_name == "free_memory_bytes" else "total"
    return f"GPU {gpu.index} {what} memory unknown ({why})"


def _fit_mode(mode: str, weights: int, gpus: list[GPUInfo]) -> ModeFit:
    need = needed_bytes(mode, weights)
    wants = f"needs {format_bytes(need)} ({format_bytes(weights)} weights + headroom)"

    def verdict(status: Status, placement: str, why: str, used: Iterable[int] = ()) -> ModeFit:
        return ModeFit(
            mode=mode,
            status=status,
            placement=placement,
            weights_bytes=weights,
            needed_bytes=need,
            gpus=list(used),
            reason=f"{wants}; {why}",
        )

    if not gpus:
        return verdict(Status.UNSUPPORTED, "none", "no GPU found")

    free = [(gpu, _usable(gpu.free_memory_bytes)) for gpu in gpus]
    total = [(gpu, _usable(gpu.total_memory_bytes)) for gpu in gpus]

    fitting = [(gpu, avail) for gpu, avail in free if avail is not None and avail >= need]
    if fitting:
        gpu, avail = max(fitting, key=lambda pair: pair[1])
        why = f"GPU {gpu.index} has {format_bytes(avail)} free after CUDA context"
        return verdict(Status.SUPPORTED, "single-gpu", why, [gpu.index])

    if len(gpus) > 1 and all(avail is not None for _, avail in free):
        together = sum(avail or 0 for _, avail in free)
        if together >= need:
            why = (
                f"no single GPU has room, {len(gpus)} GPUs have {format_bytes(together)} "
                "free together (device_map='auto')"
            )
            return verdict(Status.DEGRADED, "multi-gpu", why, [g.index for g in gpus])

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

    biggest = max(gpus, key=lambda g: g.total_memory_bytes or 0)
    why = (
        f"largest GPU {biggest.index} has {format_bytes(biggest.free_memory_bytes or 0)} "
        f"free, {format_bytes(biggest.total_memory_bytes or 0)} total"
    )
    together_total = sum(avail or 0 for _, avail in total)
    if len(gpus) > 1 and together_total >= need:
        why += f"; {len(gpus)} GPUs hold {format_bytes(together_total)} in total"
    return verdict(Status.UNSUPPORTED, "none", why)


# --------------------------------------------------------------------------- device maps


def _plan_device_maps(
    estimate: MemoryEstimate, max_memory: dict[MemoryKey, int]
) -> dict[str, DevicePlan]:
    import torch
    from accelerate.utils import CustomDtype, compute_module_sizes, infer_auto_device_map

    model = estimate.meta_model
    if model is None:
        # An estimate read back from JSON carries no model: rebuild it from its config.
        data, model_type = read_config(Path(estimate.config_path))
        model = _build_meta_model(Path(estimate.config_path), data, model_type)
        estimate.meta_model = model

    kept = estimate.kept_in_full_precision
    tensors = _tensors(model, kept)
    keep_fp32 = {t.name: torch.float32 for t in tensors if t.keep_fp32 or t.keep_fp32_strict}
    quantizable = [t.name for t in tensors if t.quantizable]
    no_split = list(estimate.no_split_modules)

    plans: dict[str, DevicePlan] = {}
    # fp16, bf16 and fastpath weigh the same; plan once and reuse.
    sixteen: DevicePlan | None = None
    for mode in estimate.modes:
        if mode in _SIXTEEN_BIT and sixteen is not None:
            plans[mode] = DevicePlan(
                mode=mode,
                max_memory=dict(sixteen.max_memory),
                devices={k: dict(v) for k, v in sixteen.devices.items()},
                device_map=dict(sixteen.device_map),
                note=sixteen.note,
            )
            continue
        special: dict[str, Any] = {}
        budget = dict(max_memory)
        if mode == "fp32":
            dtype: Any = torch.float32
        else:
            dtype = torch.float16
            if mode != "bf16":
                special.update(keep_fp32)
            else:
                dtype = torch.bfloat16
        if mode in QUANTIZED_MODES:
            low = torch.int8 if mode == "int8" else CustomDtype.INT4
            special.update(dict.fromkeys(quantizable, low))
            budget = {k: int(v * QUANTIZER_MAX_MEMORY_FACTOR) for k, v in budget.items()}
        with _quiet_loggers():
            device_map = infer_auto_device_map(
                model,
                max_memory=dict(budget),
                no_split_module_classes=no_split,
                dtype=dtype,
                special_dtypes=special or None,
            )
            sizes = compute_module_sizes(model, dtype=dtype, special_dtypes=special or None)
        plan = _summarize(mode, budget, device_map, sizes)
        if mode in _SIXTEEN_BIT:
            sixteen = plan
        plans[mode] = plan
    return plans


def _summarize(
    mode: str,
    budget: dict[MemoryKey, int],
    device_map: Mapping[str, Any],
    sizes: Mapping[str, float],
) -> DevicePlan:
    raw: dict[str, int | str] = {
        name: device if isinstance(device, int) else str(device)
        for name, device in device_map.items()
    }
    order = [*budget, "disk"]
    devices: dict[str, dict[str, int]] = {}
    for device in sorted(set(raw.values()), key=lambda d: order.index(d) if d in order else 99):
        names = [name for name, d in raw.items() if d == device]
        devices[str(device)] = {
            "bytes": int(sum(sizes.get(name, 0) for name in names)),
            "modules": len(names),
        }
    offloaded = any(d in ("cpu", "disk") for d in raw.values())
    on_gpu = any(isinstance(d, int) for d in raw.values())
    needs_offload_flag = mode in QUANTIZED_MODES and offloaded and on_gpu
    note = ""
    if needs_offload_flag:
        note = (
            "cpu/disk entries need BitsAndBytesConfig(llm_int8_enable_fp32_cpu_offload=True) "
            "and a dict device_map; offloaded modules then stay unquantized (fp32)"
        )
    elif offloaded:
        note = "part of the model is offloaded to cpu/disk: expect slow inference"
    if mode in QUANTIZED_MODES:
        note = (note + "; " if note else "") + "budget scaled by 0.90 like transformers"
    return DevicePlan(
        mode=mode,
        max_memory=budget,
        devices=devices,
        device_map=raw,
        needs_fp32_cpu_offload=needs_offload_flag,
        note=note,
    )

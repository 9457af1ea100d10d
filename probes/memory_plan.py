"""The device map accelerate would plan for each mode under a ``max_memory`` budget.

Runs accelerate's own ``infer_auto_device_map`` on the meta-device model (built from the
config when the estimate came from safetensors headers), with the dtypes each mode loads
in. accelerate's warnings are caught and said again in the audit's words.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_gpuinfer.probes.memory_meta import build_meta_model, model_tensors, quiet_loggers
from pytest_gpuinfer.probes.memory_units import MemoryKey, format_bytes
from pytest_gpuinfer.probes.memory_weights import MemoryEstimate
from pytest_gpuinfer.probes.modes import MODE_INFO, QUANTIZED_MODES
from pytest_gpuinfer.probes.sources import read_config

QUANTIZER_MAX_MEMORY_FACTOR = 0.90
"""transformers' bitsandbytes quantizers scale every max_memory entry by this before
planning a device map (room for buffers made while quantizing)."""

# Modes whose weights have 16-bit bytes (the fastpath only swaps attention).
_SIXTEEN_BIT = {
    m.name: m.weight_dtype
    for m in MODE_INFO.values()
    if not m.quantized and m.weight_dtype in ("float16", "bfloat16")
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


class _Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _accelerate_warnings() -> Iterator[list[str]]:
    """Collect what accelerate warns (logging or warnings) instead of printing it."""
    handler = _Collected()
    logger = logging.getLogger("accelerate")
    logger.addHandler(handler)
    collected: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught, quiet_loggers():
            warnings.simplefilter("always")
            logging.getLogger("accelerate").setLevel(logging.WARNING)
            yield collected
        collected.extend(str(w.message) for w in caught)
    finally:
        logger.removeHandler(handler)
        collected.extend(handler.messages)


def reword(message: str) -> str | None:
    """accelerate's warning in the audit's words; None for ones that say nothing here."""
    if "is not available, available devices are" in message:
        # Planning for a GPU this machine lacks (a profile): expected, and validated
        # against the judged GPUs before planning.
        return None
    if "bytes of buffer for offloaded layers" in message:
        size = message.split("requires", 1)[-1].split("bytes", 1)[0].strip()
        shown = format_bytes(int(size)) if size.isdigit() else f"{size} bytes"
        return (
            f"the offloaded layers' buffers ({shown}) fit no GPU's remaining budget: "
            "raise a GPU's --max-memory or load with offload_buffers=True"
        )
    if "weights are not tied" in message:
        return None  # a meta-device model is tied by construction; nothing to do
    return f"accelerate: {message.strip().splitlines()[0][:160]}"


def plan_device_maps(
    estimate: MemoryEstimate, max_memory: Mapping[MemoryKey, int]
) -> dict[str, DevicePlan]:
    """Per mode of ``estimate``, the device map accelerate plans under ``max_memory``."""
    import torch
    from accelerate.utils import CustomDtype, compute_module_sizes, infer_auto_device_map

    from pytest_gpuinfer.probes.bnb_modules import kept_in_full_precision, tied_groups

    model = estimate.meta_model
    if model is None:
        # An estimate read from headers or JSON carries no model: build it from its config.
        data, model_type = read_config(Path(estimate.config_path))
        model = build_meta_model(Path(estimate.config_path), data, model_type)
        estimate.meta_model = model

    kept = kept_in_full_precision(model, tied_groups(model))
    tensors = model_tensors(model, kept)
    keep_fp32 = {t.name: torch.float32 for t in tensors if t.keep_fp32 or t.keep_fp32_strict}
    quantizable = [t.name for t in tensors if t.quantizable]
    no_split = list(getattr(model, "_no_split_modules", None) or estimate.no_split_modules)

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
        info = MODE_INFO[mode]
        # The dtype the unquantized weights load in (quantized modes: fp16), and
        # _keep_in_fp32_modules wherever that is fp16.
        dtype: Any = getattr(torch, info.weight_dtype or "float16")
        if dtype == torch.float16:
            special.update(keep_fp32)
        if info.quantized:
            low = torch.int8 if info.bits == 8 else CustomDtype.INT4
            special.update(dict.fromkeys(quantizable, low))
            budget = {k: int(v * QUANTIZER_MAX_MEMORY_FACTOR) for k, v in budget.items()}
        with _accelerate_warnings() as said:
            device_map = infer_auto_device_map(
                model,
                max_memory=dict(budget),
                no_split_module_classes=no_split,
                dtype=dtype,
                special_dtypes=special or None,
            )
            sizes = compute_module_sizes(model, dtype=dtype, special_dtypes=special or None)
        plan = _summarize(mode, budget, device_map, sizes)
        notes = [n for n in dict.fromkeys(reword(m) for m in said) if n]
        if notes:
            plan.note = "; ".join([*([plan.note] if plan.note else []), *notes])
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

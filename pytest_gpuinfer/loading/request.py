"""The one loader signature, validated: the loader, the cache key and the fixture derive from it."""

from __future__ import annotations

import os
import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_gpuinfer.probes.errors import InputError
from pytest_gpuinfer.probes.modes import MODE_INFO, MODES
from pytest_gpuinfer.probes.sources import ModelSource, check_task, resolve_source

INT8_OPTIONS: tuple[str, ...] = (
    "llm_int8_threshold",
    "llm_int8_skip_modules",
    "llm_int8_enable_fp32_cpu_offload",
    "llm_int8_has_fp16_weight",
)
"""Keyword arguments of ``load_model`` that configure LLM.int8 (mode "int8" only)."""

NF4_OPTIONS: tuple[str, ...] = ("bnb_4bit_compute_dtype", "bnb_4bit_use_double_quant")
"""Keyword arguments of ``load_model`` that configure 4-bit loading (mode "nf4" only)."""

DEFAULT_DEVICE_MAP = None
"""``load_model``'s default placement: the whole model on the first visible GPU (with
accelerate's CPU offload where it does not fit), the CPU without a GPU. A multi-GPU host
thus places a model as a one-GPU host does; pass ``device_map="auto"`` to spread it over
every visible GPU as transformers does."""

# The loader decides these from the mode; a caller passing them would contradict it.
_MODE_OWNED_KWARGS = ("quantization_config", "load_in_8bit", "load_in_4bit", "torch_dtype")

# Types of the bitsandbytes pass-through options, checked before transformers sees them.
_OPTION_TYPES: Mapping[str, tuple[tuple[type, ...], str]] = {
    "llm_int8_threshold": ((int, float), "a number such as 6.0"),
    "llm_int8_skip_modules": ((list, tuple), "a list of module names"),
    "llm_int8_enable_fp32_cpu_offload": ((bool,), "True or False"),
    "llm_int8_has_fp16_weight": ((bool,), "True or False"),
    "bnb_4bit_use_double_quant": ((bool,), "True or False"),
}


# dtype= for the parts int8 / nf4 / fastpath leave unconverted (names, without torch).
_PART_DTYPES = frozenset(m.weight_dtype for m in MODE_INFO.values() if m.weight_dtype)
_NAMED_MAPS = ("auto", "balanced", "balanced_low_0", "sequential", "cpu", "disk", "cuda", "mps")
_DEVICE = re.compile(r"^(cuda|xpu|npu):\d+$|^\d+$")


def check_device_map(device_map: object) -> object:
    """Return ``device_map`` if accelerate/transformers can take it, else raise InputError."""
    if device_map is None or isinstance(device_map, Mapping):
        return device_map
    if isinstance(device_map, int) and not isinstance(device_map, bool) and device_map >= 0:
        return device_map
    if isinstance(device_map, str) and (device_map in _NAMED_MAPS or _DEVICE.match(device_map)):
        return device_map
    if type(device_map).__name__ == "device":  # a torch.device, checked without torch
        return device_map
    raise InputError(
        f"device_map={device_map!r} is not understood: expected None (the first GPU), "
        f"one of {', '.join(repr(m) for m in _NAMED_MAPS)}, a device such as 'cuda:0' or 0, "
        "or a dict of module name -> device"
    )


def check_workload(workload: object) -> tuple[int, int, int] | None:
    """``(batch_size, seq_len, new_tokens)`` or None; InputError names a bad value."""
    if workload is None:
        return None
    if not isinstance(workload, list | tuple) or len(workload) not in (2, 3):
        raise InputError(
            f"workload={workload!r} is not understood: expected (batch_size, seq_len) or "
            "(batch_size, seq_len, new_tokens)"
        )
    from pytest_gpuinfer.probes.memory_workload import Workload

    checked = Workload(*workload)  # the audit's own checks of each number
    return checked.batch_size, checked.seq_len, checked.new_tokens


def check_mode(mode: object) -> str:
    """Return ``mode`` if it is a known mode, else raise InputError naming it."""
    if not isinstance(mode, str) or mode not in MODES:
        raise InputError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")
    return mode


def parse_max_memory_argument(max_memory: object) -> dict[int | str, int] | None:
    """``max_memory`` as accelerate's dict of bytes (from a dict or "0=20GiB,cpu=64GiB")."""
    if max_memory is None:
        return None
    from pytest_gpuinfer.probes.memory_units import parse_max_memory

    if not isinstance(max_memory, str | Mapping):
        raise InputError(
            f"max_memory {max_memory!r} is not understood: expected a string like "
            "'0=20GiB,cpu=64GiB' or a dict like {0: '20GiB', 'cpu': '64GiB'}"
        )
    return parse_max_memory(max_memory)


def check_load_kwargs(mode: str, kwargs: Mapping[str, Any]) -> None:
    """Refuse keywords that contradict ``mode`` or that have the wrong type."""
    for name in _MODE_OWNED_KWARGS:
        if name in kwargs:
            raise InputError(
                f"load_model got {name}=: mode {mode!r} decides it; pick the mode instead "
                f"(one of {', '.join(MODES)})"
            )
    for name in INT8_OPTIONS:
        if name in kwargs and mode != "int8":
            raise InputError(f"{name}= only applies to mode 'int8', not {mode!r}")
    for name in NF4_OPTIONS:
        if name in kwargs and mode != "nf4":
            raise InputError(f"{name}= only applies to mode 'nf4', not {mode!r}")
    for name, (types, expected) in _OPTION_TYPES.items():
        value = kwargs.get(name)
        if name in kwargs and (
            not isinstance(value, types) or (bool not in types and isinstance(value, bool))
        ):
            raise InputError(f"{name}={value!r} is not understood: expected {expected}")
    if MODE_INFO[mode].dtype_fixed and "dtype" in kwargs:
        raise InputError(f"dtype= contradicts mode {mode!r}: the mode is the dtype")
    if "dtype" in kwargs and str(kwargs["dtype"]).removeprefix("torch.") not in _PART_DTYPES:
        raise InputError(
            f"dtype={kwargs['dtype']!r}: expected torch.float16, torch.bfloat16 or "
            "torch.float32 (the dtype of the parts the mode does not convert)"
        )
    if mode == "fastpath" and "attn_implementation" in kwargs:
        raise InputError(
            "attn_implementation= contradicts mode 'fastpath', which picks it (BetterTransformer, "
            "sdpa or flash_attention_2); use a reference mode to choose it yourself"
        )


def _frozen(value: object) -> Hashable:
    """A hashable stand-in for a kwargs value, for cache keys."""
    if isinstance(value, Mapping):
        return tuple(sorted((repr(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, set | frozenset):
        return frozenset(_frozen(v) for v in value)
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value  # type: ignore[return-value]


def _placement_key(device_map: object, max_memory: object) -> object:
    # The default placement is "auto" wherever that already means one device (no GPU, one
    # GPU, or a max_memory that decides): the same load, so the same cache entry.
    if device_map is not None:
        return device_map
    if max_memory is not None:
        return "auto"
    import torch

    return "auto" if torch.cuda.device_count() < 2 else "first-gpu"


CacheKey = tuple[Hashable, ...]
"""(model, mode, task, device_map, max_memory, other kwargs), all hashable."""


@dataclass(frozen=True)
class LoadRequest:
    """What ``load_model`` was asked for, validated: the one statement of its arguments."""

    source: ModelSource
    mode: str
    task: str = "causal-lm"
    device_map: Any = DEFAULT_DEVICE_MAP
    max_memory: dict[int | str, int] | None = None
    raw_max_memory: str | Mapping[Any, Any] | None = None
    workload: tuple[int, int, int] | None = None
    """(batch_size, seq_len, new_tokens) the caller will run; sizes the memory check."""
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        name_or_path: str | os.PathLike[str],
        mode: str,
        *,
        device_map: Any = DEFAULT_DEVICE_MAP,
        max_memory: str | Mapping[Any, Any] | None = None,
        task: str = "causal-lm",
        workload: tuple[int, ...] | None = None,
        **kwargs: Any,
    ) -> LoadRequest:
        """Validate ``load_model``'s arguments (raises InputError naming a bad one)."""
        check_mode(mode)
        check_task(task)
        check_load_kwargs(mode, kwargs)
        return cls(
            source=resolve_source(name_or_path),
            mode=mode,
            task=task,
            device_map=check_device_map(device_map),
            max_memory=parse_max_memory_argument(max_memory),
            raw_max_memory=max_memory,
            workload=check_workload(workload),
            kwargs=dict(kwargs),
        )

    @property
    def cache_key(self) -> CacheKey:
        return (
            self.source.name,
            self.mode,
            self.task,
            _frozen(_placement_key(self.device_map, self.max_memory)),
            _frozen(self.max_memory),
            _frozen(self.kwargs),
        )

    def call_arguments(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this request through ``load_model``."""
        return {
            "device_map": self.device_map,
            "max_memory": self.raw_max_memory,
            "task": self.task,
            "workload": self.workload,
            **self.kwargs,
        }

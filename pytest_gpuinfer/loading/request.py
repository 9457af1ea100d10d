"""The one loader signature, validated: the loader, the cache key and the fixture derive from it."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_gpuinfer.probes.errors import InputError
from pytest_gpuinfer.probes.modes import MODE_INFO, MODES, Mode, parse_mode
from pytest_gpuinfer.probes.sources import ModelSource, check_task, resolve_source

if TYPE_CHECKING:
    from pytest_gpuinfer.probes.memory_workload import Workload

INT8_OPTIONS: tuple[str, ...] = MODE_INFO["int8"].load_options
"""Keyword arguments of ``load_model`` that configure LLM.int8 (read from its Mode)."""

NF4_OPTIONS: tuple[str, ...] = MODE_INFO["nf4"].load_options
"""Keyword arguments of ``load_model`` that configure 4-bit loading (read from its Mode)."""

MODE_OPTIONS: dict[str, Mode] = {o: m for m in MODE_INFO.values() for o in m.load_options}
"""Every mode-specific ``load_model`` keyword -> the one mode that takes it."""

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


def check_attention_name(name: object) -> str:
    """``name`` if the installed transformers registers that attention implementation.

    The names are read from transformers (``ALL_ATTENTION_FUNCTIONS`` plus "eager"); a
    hub kernel ("org/repo") is left to transformers; a transformers without the registry
    (before 4.48) judges the name itself.
    """
    if not isinstance(name, str) or not name.strip():
        raise InputError(
            f"attn_implementation={name!r} is not understood: expected a name such as 'sdpa'"
        )
    names = installed_attention_names()
    plain = name.removeprefix("paged|")
    if names is None or "/" in name or plain in names or name in names:
        return name
    import transformers

    raise InputError(
        f"attn_implementation={name!r} is not one transformers {transformers.__version__} "
        f"knows: expected one of {', '.join(names)}"
    )


def installed_attention_names() -> tuple[str, ...] | None:
    """The attention implementations the installed transformers registers, or None."""
    try:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    except ImportError:
        return None
    keys = getattr(ALL_ATTENTION_FUNCTIONS, "valid_keys", None)
    listed = list(keys() if callable(keys) else ALL_ATTENTION_FUNCTIONS.keys())
    return tuple(dict.fromkeys(["eager", *map(str, listed)]))


def check_devices(device_map: object) -> None:
    """Every CUDA device ``device_map`` names exists on this machine (InputError if not)."""
    values = list(device_map.values()) if isinstance(device_map, Mapping) else [device_map]
    wanted: list[tuple[object, int]] = []
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool):
            wanted.append((value, value))
        elif isinstance(value, str) and _DEVICE.match(value):
            kind, _, digits = value.rpartition(":")
            if kind in ("", "cuda"):
                wanted.append((value, int(digits)))
        elif isinstance(value, str) and value == "cuda":
            wanted.append((value, 0))
        elif isinstance(device_map, Mapping) and not (
            (isinstance(value, str) and value in ("cpu", "disk", "mps", "meta"))
            or type(value).__name__ == "device"
        ):
            raise InputError(
                f"device_map={device_map!r}: device {value!r} is not understood: expected "
                "'cpu', 'disk', 'cuda:N' or a GPU ordinal N"
            )
    if not wanted:
        return
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for value, ordinal in wanted:
        if ordinal >= count:
            have = "no CUDA device" if count == 0 else f"{count} (cuda:0 to cuda:{count - 1})"
            raise InputError(
                f"device_map={device_map!r}: device {value!r} does not exist here: this "
                f"machine has {have}"
            )


def check_workload(workload: object) -> Workload | None:
    """The audit's ``Workload`` from one, or from ``(batch_size, seq_len[, new_tokens])``;
    InputError names a bad value."""
    from pytest_gpuinfer.probes.memory_workload import Workload

    if workload is None:
        return None
    if isinstance(workload, Workload):
        sizes = workload.to_dict()
    elif isinstance(workload, list | tuple) and len(workload) in (2, 3):
        sizes = dict(zip(("batch_size", "seq_len", "new_tokens"), workload, strict=False))
    else:
        raise InputError(
            f"workload={workload!r} is not understood: expected (batch_size, seq_len) or "
            "(batch_size, seq_len, new_tokens)"
        )
    try:
        return Workload.requested(**sizes)  # the audit's own checks of each number
    except InputError as error:
        shown = repr(workload) if len(repr(workload)) <= 100 else "(...)"
        raise InputError(f"workload={shown}: {error}") from None


def check_mode(mode: object) -> str:
    """The name of ``mode`` (a name or a ``Mode``); InputError naming an unknown one."""
    return parse_mode(mode).name


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


def check_load_kwargs(mode: Mode, kwargs: Mapping[str, Any]) -> None:
    """Refuse keywords that contradict ``mode`` or that have the wrong type."""
    for name in _MODE_OWNED_KWARGS:
        if name in kwargs:
            raise InputError(
                f"load_model got {name}=: mode {mode.name!r} decides it; pick the mode instead "
                f"(one of {', '.join(MODES)})"
            )
    for name, owner in MODE_OPTIONS.items():
        if name in kwargs and owner is not mode:
            raise InputError(f"{name}= only applies to mode {owner.name!r}, not {mode.name!r}")
    for name, (types, expected) in _OPTION_TYPES.items():
        value = kwargs.get(name)
        if name in kwargs and (
            not isinstance(value, types) or (bool not in types and isinstance(value, bool))
        ):
            raise InputError(f"{name}={value!r} is not understood: expected {expected}")
    threshold = kwargs.get("llm_int8_threshold")
    if isinstance(threshold, float) and not math.isfinite(threshold):
        raise InputError(
            f"llm_int8_threshold={threshold!r} is not understood: expected a finite number "
            "such as 6.0"
        )
    if "bnb_4bit_compute_dtype" in kwargs:
        compute = kwargs["bnb_4bit_compute_dtype"]
        if str(compute).removeprefix("torch.") not in _PART_DTYPES:
            raise InputError(
                f"bnb_4bit_compute_dtype={compute!r} is not understood: expected one of "
                f"{', '.join(sorted(_PART_DTYPES))} (a name or a torch dtype)"
            )
    if "attn_implementation" in kwargs:
        check_attention_name(kwargs["attn_implementation"])
    if mode.dtype_fixed and "dtype" in kwargs:
        raise InputError(f"dtype= contradicts mode {mode.name!r}: the mode is the dtype")
    if "dtype" in kwargs and str(kwargs["dtype"]).removeprefix("torch.") not in _PART_DTYPES:
        raise InputError(
            f"dtype={kwargs['dtype']!r}: expected torch.float16, torch.bfloat16 or "
            "torch.float32 (the dtype of the parts the mode does not convert)"
        )
    if mode.fused_attention and "attn_implementation" in kwargs:
        raise InputError(
            f"attn_implementation= contradicts mode {mode.name!r}, which picks it "
            "(BetterTransformer, sdpa or flash_attention_2); use a reference mode to choose "
            "it yourself"
        )


def _checked_devices(device_map: object) -> object:
    if device_map is not None:
        check_devices(device_map)
    return device_map


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
    workload: Workload | None = None
    """What the caller will run (``generate()`` sizes); sizes the memory check."""
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        name_or_path: str | os.PathLike[str],
        mode: str | Mode,
        *,
        device_map: Any = DEFAULT_DEVICE_MAP,
        max_memory: str | Mapping[Any, Any] | None = None,
        task: str = "causal-lm",
        workload: Workload | tuple[int, ...] | None = None,
        **kwargs: Any,
    ) -> LoadRequest:
        """Validate ``load_model``'s arguments (raises InputError naming a bad one)."""
        parsed = parse_mode(mode)
        check_task(task)
        check_load_kwargs(parsed, kwargs)
        return cls(
            source=resolve_source(name_or_path),
            mode=parsed.name,
            task=task,
            device_map=_checked_devices(check_device_map(device_map)),
            max_memory=parse_max_memory_argument(max_memory),
            workload=check_workload(workload),
            kwargs=dict(kwargs),
        )

    @property
    def info(self) -> Mode:
        """The mode's descriptor (``mode`` stays its name: the public, hashable form)."""
        return MODE_INFO[self.mode]

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

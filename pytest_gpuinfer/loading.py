"""Load Hugging Face models in one inference mode, check what was applied, and cache them.

Usable outside pytest. Nothing heavy is imported at module import: torch, transformers,
bitsandbytes and optimum are imported inside the functions that need them.

The mode gate comes first: a mode the report says cannot run here raises
:class:`ModeUnavailable` before transformers is touched. After a load the loader reads
back what transformers actually did (attention implementation, quantized layers,
BetterTransformer layers) instead of assuming the request was honoured.
"""

from __future__ import annotations

import copy
import gc
import json
import os
import time
import warnings
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_gpuinfer.probes.errors import InputError
from pytest_gpuinfer.probes.report import MODES
from pytest_gpuinfer.probes.sources import (
    TASKS,
    ModelSource,
    check_task,
    infer_task,
    infer_task_from_config,
    resolve_source,
)

__all__ = [
    "INT8_OPTIONS",
    "MODES",
    "NF4_OPTIONS",
    "TASKS",
    "CacheKey",
    "LoadedModel",
    "ModeUnavailable",
    "ModelCache",
    "ModelLoadOOM",
    "check_mode",
    "check_task",
    "estimate_load_bytes",
    "infer_task",
    "infer_task_from_config",
    "load_model",
    "memory_in_use",
    "release_memory",
    "save_model",
]

if TYPE_CHECKING:
    from pytest_gpuinfer.probes.report import Report


INT8_OPTIONS: tuple[str, ...] = (
    "llm_int8_threshold",
    "llm_int8_skip_modules",
    "llm_int8_enable_fp32_cpu_offload",
    "llm_int8_has_fp16_weight",
)
"""Keyword arguments of ``load_model`` that configure LLM.int8 (mode "int8" only)."""

NF4_OPTIONS: tuple[str, ...] = ("bnb_4bit_compute_dtype", "bnb_4bit_use_double_quant")
"""Keyword arguments of ``load_model`` that configure 4-bit loading (mode "nf4" only)."""

# The loader decides these from the mode; a caller passing them would contradict it.
_MODE_OWNED_KWARGS = ("quantization_config", "load_in_8bit", "load_in_4bit", "torch_dtype")

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "tokenizer.model",
)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# Bytes per parameter by mode, for the memory estimate (quantized modes keep norms and
# embeddings in 16-bit, hence more than 1 and 0.5).
_BYTES_PER_PARAMETER = {
    "fp32": 4.0,
    "fp16": 2.0,
    "bf16": 2.0,
    "fastpath": 2.0,
    "int8": 1.3,
    "nf4": 0.8,
}
_STORED_BYTES_PER_PARAMETER = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


class ModeUnavailable(Exception):
    """The mode cannot run on this machine (or the report is a simulated profile)."""

    def __init__(self, mode: str, reason: str) -> None:
        super().__init__(f"mode {mode} is unavailable: {reason}")
        self.mode = mode
        self.reason = reason


class ModelLoadOOM(RuntimeError):
    """CUDA ran out of memory while loading; what was allocated has been released."""

    def __init__(
        self,
        name_or_path: str,
        mode: str,
        *,
        needed_bytes: int | None,
        free_bytes: dict[int, int],
        detail: str,
    ) -> None:
        self.needed_bytes = needed_bytes
        self.free_bytes = free_bytes
        needed = _format(needed_bytes) if needed_bytes is not None else "an unknown amount"
        free = (
            ", ".join(f"cuda:{i} {_format(b)}" for i, b in sorted(free_bytes.items())) or "unknown"
        )
        super().__init__(
            f"CUDA out of memory loading {name_or_path} in mode {mode}: needs about {needed}, "
            f"free at load time: {free}; the partial load was released ({detail})"
        )


@dataclass(eq=False)
class LoadedModel:
    """A model loaded in one mode, with what was really applied and where it sits."""

    model: Any
    tokenizer: Any | None
    mode: str
    applied: str
    """What was applied, read back from the model, e.g. "sdpa", "bettertransformer",
    "eager (fallback: ...)", "BitsAndBytesConfig(load_in_8bit=True)"."""
    device_map: dict[str, str] | None
    """``model.hf_device_map`` (values as device strings); None when transformers set
    none, which it does when the whole model sits on one device without an explicit map."""
    devices: tuple[str, ...]
    """Every device holding a parameter or buffer, sorted: ("cpu",), ("cuda:0",) ...;
    with an offloading map, the map's devices ("cpu", "disk") instead of "meta"."""
    footprint_bytes: int
    load_seconds: float
    name_or_path: str = ""
    task: str = "causal-lm"
    attn_implementation: str | None = None
    """``model.config._attn_implementation`` after loading ("sdpa", "eager", ...)."""
    quantized_layers: int = 0
    """Linear layers bitsandbytes replaced (Linear8bitLt with int8 weights, Linear4bit)."""
    fallback: str | None = None
    """Why the mode was not applied as planned (None when it was)."""
    bettertransformer: bool = False

    @property
    def input_device(self) -> str:
        """Where inputs go: the device of the first parameter (the first shard's)."""
        return str(self.model.device)


# ---------------------------------------------------------------------------- helpers


def _format(n: int) -> str:
    from pytest_gpuinfer.probes.memory_units import format_bytes

    return format_bytes(n)


def check_mode(mode: object) -> str:
    """Return ``mode`` if it is one of :data:`probes.report.MODES`, else raise InputError."""
    if not isinstance(mode, str) or mode not in MODES:
        raise InputError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")
    return mode


def _parse_max_memory(max_memory: object) -> dict[int | str, int] | None:
    if max_memory is None:
        return None
    from pytest_gpuinfer.probes.memory_units import parse_max_memory

    if not isinstance(max_memory, str | Mapping):
        raise InputError(
            f"max_memory {max_memory!r} is not understood: expected a string like "
            "'0=20GiB,cpu=64GiB' or a dict like {0: '20GiB', 'cpu': '64GiB'}"
        )
    return parse_max_memory(max_memory)


def _check_kwargs(mode: str, kwargs: Mapping[str, Any]) -> None:
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
    if mode in ("fp32", "fp16", "bf16") and "dtype" in kwargs:
        raise InputError(f"dtype= contradicts mode {mode!r}: the mode is the dtype")
    if mode == "fastpath" and "attn_implementation" in kwargs:
        raise InputError(
            "attn_implementation= contradicts mode 'fastpath', which picks it (BetterTransformer, "
            "sdpa or flash_attention_2); use a reference mode to choose it yourself"
        )


def _gate(mode: str, report: Report) -> None:
    verdict = report.verdicts.get(mode)
    if verdict is None:
        raise ModeUnavailable(mode, "the report has no verdict for this mode")
    if not verdict.ok:
        raise ModeUnavailable(mode, verdict.reason or f"verdict {verdict.status.value}")
    if report.simulated:
        raise ModeUnavailable(
            mode,
            f"the report is the simulated profile {report.profile!r}: it judges hardware this "
            "machine does not have, so no model can execute here",
        )


def _default_report(mode: str) -> Report:
    from pytest_gpuinfer import probes

    probe = getattr(probes, "probe", None)
    if probe is None:
        raise ModeUnavailable(mode, "no report was given and probes.probe() is not available")
    report: Report = probe()
    return report


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


def _gpu_ordinals(device_map: object, max_memory: Mapping[int | str, int] | None) -> list[int]:
    """The CUDA ordinals a load may place weights on (for the free-memory checks)."""
    import torch

    if not torch.cuda.is_available():
        return []
    every = list(range(torch.cuda.device_count()))
    if isinstance(device_map, str) and device_map in (
        "auto",
        "balanced",
        "sequential",
        "balanced_low_0",
    ):
        if max_memory is not None:
            return [k for k in max_memory if isinstance(k, int) and k in every]
        return every
    values = list(device_map.values()) if isinstance(device_map, Mapping) else [device_map]
    ordinals: set[int] = set()
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool):
            ordinals.add(value)
        elif isinstance(value, str) and value.startswith("cuda"):
            _, _, suffix = value.partition(":")
            ordinals.add(int(suffix) if suffix.isdigit() else torch.cuda.current_device())
        elif value is not None and getattr(value, "type", None) == "cuda":
            index = getattr(value, "index", None)
            ordinals.add(index if isinstance(index, int) else torch.cuda.current_device())
    return sorted(o for o in ordinals if o in every)


def _free_gpu_memory(ordinals: list[int]) -> dict[int, int]:
    import torch

    free: dict[int, int] = {}
    for ordinal in ordinals:
        free[ordinal] = int(torch.cuda.mem_get_info(ordinal)[0])
    return free


def estimate_load_bytes(name_or_path: str | os.PathLike[str], mode: str) -> int | None:
    """Bytes a load in ``mode`` needs: ``probes.memory_fit``'s estimate from the config,
    else a rough one from the weight files and their stored dtype.

    None for a hub id that is not cached locally.
    """
    try:
        from pytest_gpuinfer.probes.memory_fit import estimate_model_memory

        return estimate_model_memory(os.fspath(name_or_path), (mode,)).weights_bytes(mode)
    except Exception:  # an estimate must never break a load; fall back to file sizes
        pass
    source = resolve_source(name_or_path)
    if source.directory is None:
        return None
    weights = [
        p for p in source.directory.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES)
    ]
    if not weights:
        return None
    file_bytes = sum(p.stat().st_size for p in weights)
    try:
        config = json.loads((source.directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    stored = config.get("dtype") or config.get("torch_dtype") or "float32"
    stored_bytes = _STORED_BYTES_PER_PARAMETER.get(str(stored), 4)
    return int(file_bytes / stored_bytes * _BYTES_PER_PARAMETER[mode])


def memory_in_use() -> int:
    """Bytes of CUDA memory torch has allocated in this process, over all GPUs (0 without)."""
    import torch

    if not torch.cuda.is_available() or not _cuda_initialized():
        return 0
    return sum(int(torch.cuda.memory_allocated(i)) for i in range(torch.cuda.device_count()))


def release_memory() -> None:
    """Collect garbage and hand torch's cached CUDA blocks back to the driver."""
    gc.collect()
    import torch

    if torch.cuda.is_available() and _cuda_initialized():
        torch.cuda.empty_cache()


def _cuda_initialized() -> bool:
    import torch

    return bool(torch.cuda.is_initialized())  # type: ignore[no-untyped-call]


# ---------------------------------------------------------------------------- loading


def _dtype_kwarg() -> str:
    import transformers

    from pytest_gpuinfer.probes.hf_calls import dtype_keyword

    return dtype_keyword(transformers.__version__)


def _targets_gpu(device_map: object) -> bool:
    import torch

    if not torch.cuda.is_available():
        return False
    if isinstance(device_map, str):
        return device_map != "cpu" and device_map != "disk"
    if isinstance(device_map, Mapping):
        return any(str(v) not in ("cpu", "disk") for v in device_map.values())
    return True


@dataclass
class _Plan:
    kwargs: dict[str, Any] = field(default_factory=dict)
    applied: str = ""
    attention: str | None = None
    """The attention implementation requested (None: transformers' default)."""
    bettertransformer: bool = False
    fallback: str | None = None


def _quantization_plan(mode: str, options: dict[str, Any], on_gpu: bool, software: Any) -> _Plan:
    import torch

    if mode == "int8":
        from pytest_gpuinfer.probes import hf_calls as rules

        api = rules.int8_loading_api(software)
        if api == "load_in_8bit":
            return _Plan(
                kwargs={"load_in_8bit": True, **options},
                applied="load_in_8bit=True",
            )
        from transformers import BitsAndBytesConfig

        shown = "".join(f", {k}={v!r}" for k, v in options.items())
        return _Plan(
            kwargs={"quantization_config": BitsAndBytesConfig(load_in_8bit=True, **options)},  # type: ignore[no-untyped-call]
            applied=f"BitsAndBytesConfig(load_in_8bit=True{shown})",
        )
    from transformers import BitsAndBytesConfig

    compute = options.pop("bnb_4bit_compute_dtype", torch.float16 if on_gpu else torch.float32)
    config = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute, **options
    )
    shown = "".join(f", {k}={v!r}" for k, v in options.items())
    return _Plan(
        kwargs={"quantization_config": config},
        applied=(
            f"BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type='nf4', "
            f"bnb_4bit_compute_dtype={str(compute).removeprefix('torch.')}{shown})"
        ),
    )


def _class_supports(model_class: type | None, flag: str) -> bool:
    if model_class is None:
        return True
    value = getattr(model_class, flag, True)
    # Some classes compute it per instance (a property): only a plain False is a refusal.
    return value is not False


def _model_class(auto_class: Any, config: Any) -> type | None:
    mapping = getattr(auto_class, "_model_mapping", None)
    if mapping is None:
        return None
    try:
        found: type = mapping[type(config)]
    except (KeyError, ValueError):
        return None
    return found


def _fastpath_plan(report: Report, model_type: str | None, model_class: type | None) -> _Plan:
    from pytest_gpuinfer.probes import hf_calls as rules

    gpu = report.gpus[0] if report.gpus else None
    plan = rules.plan_fastpath(report.software, gpu, model_type=model_type)
    implementation: str = plan.implementation
    if implementation == "bettertransformer":
        # BetterTransformer refuses models already loaded with SDPA (REFERENCE §2).
        return _Plan(
            kwargs={"attn_implementation": "eager"},
            applied="bettertransformer",
            attention="eager",
            bettertransformer=True,
        )
    if implementation == "flash_attention_2":
        if _class_supports(model_class, "_supports_flash_attn_2") and _class_supports(
            model_class, "_supports_flash_attn"
        ):
            return _Plan(
                kwargs={"attn_implementation": "flash_attention_2"},
                applied="flash_attention_2",
                attention="flash_attention_2",
            )
        implementation = "sdpa"
        note: str | None = f"{_class_name(model_class)} has no flash_attention_2 support"
    else:
        # A fallback only when this stack would use BetterTransformer for another model.
        refused = (
            model_type in rules.BETTERTRANSFORMER_REFUSED_MODEL_TYPES
            and rules.plan_fastpath(report.software, gpu).implementation == "bettertransformer"
        )
        note = plan.reason if refused else None
    return _sdpa_plan(model_class, note)


def _class_name(model_class: type | None) -> str:
    return model_class.__name__ if model_class is not None else "this model class"


def _sdpa_plan(model_class: type | None, note: str | None) -> _Plan:
    import transformers

    if not _class_supports(model_class, "_supports_sdpa"):
        reason = (
            f"{_class_name(model_class)} has no SDPA attention in transformers "
            f"{transformers.__version__}"
        )
        if note:
            reason = f"{note}; {reason}"
        return _Plan(
            kwargs={"attn_implementation": "eager"},
            applied=f"eager (fallback: {reason})",
            attention="eager",
            fallback=reason,
        )
    applied = f"sdpa (fallback: {note})" if note else "sdpa"
    return _Plan(
        kwargs={"attn_implementation": "sdpa"},
        applied=applied,
        attention="sdpa",
        fallback=note,
    )


def _bettertransformer_layers(model: Any) -> int:
    return sum(
        1
        for module in model.modules()
        if type(module).__module__.startswith("optimum.bettertransformer")
    )


def _apply_bettertransformer(model: Any) -> Any:
    to_bettertransformer = getattr(model, "to_bettertransformer", None)
    if callable(to_bettertransformer):
        return to_bettertransformer()
    from optimum.bettertransformer import BetterTransformer

    return BetterTransformer.transform(model)


def _count_quantized(model: Any, mode: str) -> int:
    import torch

    count = 0
    for module in model.modules():
        name = type(module).__name__
        weight = getattr(module, "weight", None)
        if mode == "int8" and name == "Linear8bitLt":
            if weight is not None and weight.dtype == torch.int8:
                count += 1
        elif mode == "nf4" and name == "Linear4bit":
            count += 1
    return count


def _placement(model: Any) -> tuple[dict[str, str] | None, tuple[str, ...]]:
    raw = getattr(model, "hf_device_map", None)
    device_map: dict[str, str] | None = None
    if isinstance(raw, Mapping):
        device_map = {
            str(k): (f"cuda:{v}" if isinstance(v, int) else str(v)) for k, v in raw.items()
        }
    devices = {str(p.device) for p in model.parameters()}
    devices |= {str(b.device) for b in model.buffers()}
    if device_map is not None:
        # Offloaded weights sit on "meta" until accelerate's hooks bring them in; the
        # map says where they really are.
        devices = (devices - {"meta"}) | set(device_map.values())
    return device_map, tuple(sorted(devices))


def _has_tokenizer(directory: Path) -> bool:
    return any((directory / name).is_file() for name in _TOKENIZER_FILES)


def _is_oom(error: BaseException) -> bool:
    import torch

    oom_types: tuple[type[BaseException], ...] = (torch.cuda.OutOfMemoryError,)
    generic = getattr(torch, "OutOfMemoryError", None)
    if isinstance(generic, type):
        oom_types += (generic,)
    if isinstance(error, oom_types):
        return True
    # bitsandbytes and older torch raise a plain RuntimeError with this text.
    return isinstance(error, RuntimeError) and "CUDA out of memory" in str(error)


def _from_pretrained(
    auto_class: Any,
    source: ModelSource,
    mode: str,
    kwargs: dict[str, Any],
    ordinals: list[int],
) -> Any:
    free_before = _free_gpu_memory(ordinals) if ordinals else {}
    oom_detail: str | None = None
    try:
        return auto_class.from_pretrained(source.name, **kwargs)
    except Exception as error:
        if not _is_oom(error):
            raise
        oom_detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    # Outside the except block: the traceback, and with it the partly built model in
    # from_pretrained's frames, is gone, so collecting frees its tensors.
    release_memory()
    raise ModelLoadOOM(
        source.name,
        mode,
        needed_bytes=estimate_load_bytes(source.name, mode) if source.directory else None,
        free_bytes=free_before,
        detail=oom_detail,
    )


def load_model(
    name_or_path: str | os.PathLike[str],
    mode: str,
    *,
    device_map: Any = "auto",
    max_memory: str | Mapping[Any, Any] | None = None,
    task: str = "causal-lm",
    report: Report | None = None,
    **kwargs: Any,
) -> LoadedModel:
    """Load a model (and its tokenizer, when the directory has one) in one inference mode.

    ``mode`` is one of fp32, fp16, bf16, int8, nf4, fastpath. ``task`` picks the Auto
    class (see :data:`TASKS`). ``max_memory`` takes accelerate's dict or the string form
    "0=20GiB,cpu=64GiB". int8 options (:data:`INT8_OPTIONS`) and nf4 options
    (:data:`NF4_OPTIONS`) are keyword arguments; other keywords go to ``from_pretrained``.
    ``report`` is the probe's report; None probes this machine.

    Raises:
        InputError: bad mode, task, path, max_memory or keyword arguments.
        ModeUnavailable: the report says the mode cannot run here, or is simulated.
        ModelLoadOOM: CUDA ran out of memory during the load (the memory was released).
    """
    check_mode(mode)
    check_task(task)
    _check_kwargs(mode, kwargs)
    source = resolve_source(name_or_path)
    parsed_max_memory = _parse_max_memory(max_memory)
    if report is None:
        report = _default_report(mode)
    _gate(mode, report)

    import torch
    import transformers

    auto_class = getattr(transformers, TASKS[task])
    options = {k: kwargs.pop(k) for k in (*INT8_OPTIONS, *NF4_OPTIONS) if k in kwargs}
    try:
        config = transformers.AutoConfig.from_pretrained(source.name)
    except (OSError, ValueError) as error:
        first = (str(error).strip().splitlines() or [""])[0][:200]
        raise InputError(f"cannot load a model config from {source.name!r}: {first}") from None
    model_class = _model_class(auto_class, config)
    if model_class is None and getattr(auto_class, "_model_mapping", None) is not None:
        raise InputError(
            f"task {task!r} does not fit model type {config.model_type!r} of {source.name}: "
            f"{TASKS[task]} has no class for it (try task {infer_task_from_config(config)!r})"
        )

    on_gpu = _targets_gpu(device_map)
    plan: _Plan
    dtype: Any
    if mode in ("fp32", "fp16", "bf16"):
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[mode]
        plan = _Plan(applied=str(dtype).removeprefix("torch."))
    elif mode in ("int8", "nf4"):
        plan = _quantization_plan(mode, options, on_gpu, report.software)
        # int8 keeps the unquantized parts in fp16 (transformers' own default for
        # LLM.int8, and what the fp16/int8 footprint ratio compares against).
        default = torch.float16 if (mode == "int8" or on_gpu) else torch.float32
        dtype = kwargs.pop("dtype", default)
    else:
        plan = _fastpath_plan(report, getattr(config, "model_type", None), model_class)
        dtype = kwargs.pop("dtype", torch.float16 if on_gpu else torch.float32)

    load_kwargs: dict[str, Any] = {**kwargs, **plan.kwargs, _dtype_kwarg(): dtype}
    load_kwargs["device_map"] = device_map
    if parsed_max_memory is not None:
        load_kwargs["max_memory"] = parsed_max_memory
    ordinals = _gpu_ordinals(device_map, parsed_max_memory)

    started = time.perf_counter()
    model = _from_pretrained(auto_class, source, mode, load_kwargs, ordinals)
    applied, fallback, is_bt = plan.applied, plan.fallback, False
    if plan.bettertransformer:
        model, applied, fallback, is_bt = _finish_bettertransformer(
            model, auto_class, source, mode, load_kwargs, ordinals, model_class
        )
    model.eval()
    seconds = time.perf_counter() - started

    attention = getattr(model.config, "_attn_implementation", None)
    if not is_bt and mode == "fastpath":
        applied, fallback = _check_attention(applied, fallback, attention, load_kwargs)
    quantized = _count_quantized(model, mode) if mode in ("int8", "nf4") else 0
    if mode in ("int8", "nf4") and quantized == 0:
        fallback = f"{applied} quantized no layer: every Linear stayed {dtype}" + (
            " (llm_int8_enable_fp32_cpu_offload keeps CPU-mapped modules unquantized)"
            if options.get("llm_int8_enable_fp32_cpu_offload")
            else ""
        )
        applied = f"not quantized (fallback: {fallback})"
        warnings.warn(f"{source.name}: {fallback}", stacklevel=2)
    elif mode not in ("fastpath",) and attention:
        applied = f"{applied} (attention: {attention})"

    tokenizer = None
    if source.directory is not None and _has_tokenizer(source.directory):
        tokenizer = transformers.AutoTokenizer.from_pretrained(source.name)
    placed_map, devices = _placement(model)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        mode=mode,
        applied=applied,
        device_map=placed_map,
        devices=devices,
        footprint_bytes=int(model.get_memory_footprint()),
        load_seconds=seconds,
        name_or_path=source.name,
        task=task,
        attn_implementation=attention,
        quantized_layers=quantized,
        fallback=fallback,
        bettertransformer=is_bt,
    )


def _check_attention(
    applied: str, fallback: str | None, attention: str | None, load_kwargs: Mapping[str, Any]
) -> tuple[str, str | None]:
    requested = load_kwargs.get("attn_implementation")
    if requested is None or attention == requested:
        return applied, fallback
    reason = f"asked transformers for {requested}, the model reports {attention}"
    return f"{attention} (fallback: {reason})", reason


def _finish_bettertransformer(
    model: Any,
    auto_class: Any,
    source: ModelSource,
    mode: str,
    load_kwargs: dict[str, Any],
    ordinals: list[int],
    model_class: type | None,
) -> tuple[Any, str, str | None, bool]:
    refusal: str
    try:
        transformed = _apply_bettertransformer(model)
    except (ValueError, NotImplementedError, ImportError, RuntimeError, AttributeError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        refusal = f"BetterTransformer refused: {type(error).__name__}: {first}"
    else:
        layers = _bettertransformer_layers(transformed)
        if layers:
            return transformed, f"bettertransformer ({layers} layers)", None, True
        refusal = "BetterTransformer replaced no layer"
        model = transformed
    # Fall back to native SDPA: that needs a fresh load (older transformers cannot switch
    # the attention of a loaded model).
    del model
    release_memory()
    plan = _sdpa_plan(model_class, refusal)
    load_kwargs = {**load_kwargs, **plan.kwargs}
    reloaded = _from_pretrained(auto_class, source, mode, load_kwargs, ordinals)
    attention = getattr(reloaded.config, "_attn_implementation", None)
    applied, fallback = _check_attention(plan.applied, plan.fallback, attention, load_kwargs)
    return reloaded, applied, fallback, False


def save_model(loaded: LoadedModel, directory: str | os.PathLike[str]) -> Path:
    """``save_pretrained`` the model (and tokenizer) to ``directory``.

    A BetterTransformer model is reversed first (``reverse_bettertransformer``), as
    optimum requires; the loaded model itself stays transformed.
    """
    target = Path(directory)
    model = loaded.model
    if loaded.bettertransformer:
        reverse = getattr(model, "reverse_bettertransformer", None)
        if callable(reverse):
            model = reverse()
        else:
            from optimum.bettertransformer import BetterTransformer

            model = BetterTransformer.reverse(model)
    model.save_pretrained(target)
    if loaded.tokenizer is not None:
        loaded.tokenizer.save_pretrained(target)
    return target


# ---------------------------------------------------------------------------- cache

CacheKey = tuple[Hashable, ...]
"""(model, mode, task, device_map, max_memory, other kwargs), all hashable."""


class ModelCache:
    """Load each (model, mode, task, placement, kwargs) once and share it.

    Least recently used entries are released before a load when the GPUs it may use lack
    the free memory it needs. ``private=True`` gives a caller a model of its own: a deep
    copy for float models, a fresh uncached load for int8/nf4 and BetterTransformer
    models, whose bitsandbytes parameters and optimum layers are not safe to deepcopy.
    """

    def __init__(self, report: Report | None = None) -> None:
        self.report = report
        self.loads = 0
        """How many real loads (not cache hits) ran, private fresh loads included."""
        self.evictions = 0
        """How many entries were released to make room on the GPU."""
        self._entries: OrderedDict[CacheKey, LoadedModel] = OrderedDict()

    def key(
        self,
        name_or_path: str | os.PathLike[str],
        mode: str,
        *,
        device_map: Any = "auto",
        max_memory: str | Mapping[Any, Any] | None = None,
        task: str = "causal-lm",
        **kwargs: Any,
    ) -> CacheKey:
        """The cache key of a ``get`` with these arguments (validates them)."""
        check_mode(mode)
        check_task(task)
        _check_kwargs(mode, kwargs)
        source = resolve_source(name_or_path)
        parsed = _parse_max_memory(max_memory)
        return (
            source.name,
            mode,
            task,
            _frozen(device_map),
            _frozen(parsed),
            _frozen(kwargs),
        )

    def get(
        self,
        name_or_path: str | os.PathLike[str],
        mode: str,
        *,
        device_map: Any = "auto",
        max_memory: str | Mapping[Any, Any] | None = None,
        task: str = "causal-lm",
        private: bool = False,
        **kwargs: Any,
    ) -> LoadedModel:
        """The cached model for these arguments, loading it on first use.

        Same arguments and errors as :func:`load_model`.
        """
        key = self.key(
            name_or_path, mode, device_map=device_map, max_memory=max_memory, task=task, **kwargs
        )
        if self.report is None:
            self.report = _default_report(mode)
        _gate(mode, self.report)
        cached = self._entries.get(key)
        if cached is not None:
            self._entries.move_to_end(key)
            if not private:
                return cached
            if mode not in ("int8", "nf4") and not cached.bettertransformer:
                return _private_copy(cached)
        load = {
            "device_map": device_map,
            "max_memory": max_memory,
            "task": task,
            "report": self.report,
            **kwargs,
        }
        self._make_room(name_or_path, mode, device_map, max_memory)
        loaded = load_model(name_or_path, mode, **load)
        self.loads += 1
        if cached is None:
            self._entries[key] = loaded
        if private and cached is None:
            if mode not in ("int8", "nf4") and not loaded.bettertransformer:
                return _private_copy(loaded)
            # The first load stays cached; the caller gets a second, uncached one.
            fresh = load_model(name_or_path, mode, **load)
            self.loads += 1
            return fresh
        return loaded

    def _make_room(
        self,
        name_or_path: str | os.PathLike[str],
        mode: str,
        device_map: Any,
        max_memory: str | Mapping[Any, Any] | None,
    ) -> None:
        if not self._entries:
            return
        needed = estimate_load_bytes(name_or_path, mode)
        if needed is None:
            return
        ordinals = _gpu_ordinals(device_map, _parse_max_memory(max_memory))
        if not ordinals:
            return
        while self._entries and sum(_free_gpu_memory(ordinals).values()) < needed:
            oldest = next(iter(self._entries))
            self.release(oldest)
            self.evictions += 1

    def release(self, key: CacheKey) -> bool:
        """Drop one entry and free its memory; False when the key is not cached.

        Memory returns once no caller holds the model any more.
        """
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        del entry
        release_memory()
        return True

    def clear(self) -> None:
        """Drop every entry and free the memory."""
        self._entries.clear()
        release_memory()

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[CacheKey]:
        return iter(list(self._entries))


def _private_copy(loaded: LoadedModel) -> LoadedModel:
    started = time.perf_counter()
    model = copy.deepcopy(loaded.model)
    copied = copy.copy(loaded)
    copied.model = model
    copied.load_seconds = time.perf_counter() - started
    return copied

"""Loading a model in one mode: gate on the report, call transformers, read back what was applied.

Usable outside pytest. Nothing heavy is imported at module import: torch, transformers,
bitsandbytes and optimum are imported inside the functions that need them.
"""

from __future__ import annotations

import os
import re
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_gpuinfer.loading import gpu_memory
from pytest_gpuinfer.loading.plan import (
    check_attention,
    dtype_keyword,
    model_class_for,
    plan_load,
    sdpa_plan,
)
from pytest_gpuinfer.loading.request import (
    DEFAULT_DEVICE_MAP,
    LoadRequest,
)
from pytest_gpuinfer.probes.errors import (
    InputError,
    ModelLoadOOM,
    ModeUnavailable,
    WorkloadDoesNotFit,
)
from pytest_gpuinfer.probes.modes import MODE_INFO
from pytest_gpuinfer.probes.sources import (
    TASKS,
    WEIGHT_SUFFIXES,
    ModelSource,
    infer_task_from_config,
)

if TYPE_CHECKING:
    from pytest_gpuinfer.probes.memory_workload import Workload
    from pytest_gpuinfer.probes.report import Report

_UNEXPECTED_KEYWORD = re.compile(r"unexpected keyword argument '(\w+)'")

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "tokenizer.model",
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


def gate(mode: str, report: Report) -> None:
    """Raise :class:`ModeUnavailable` unless the report says ``mode`` runs here, for real."""
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


def default_report(mode: str) -> Report:
    """This machine's report, probed now (the loader's default)."""
    from pytest_gpuinfer import probes

    probe = getattr(probes, "probe", None)
    if probe is None:
        raise ModeUnavailable(mode, "no report was given and probes.probe() is not available")
    report: Report = probe()
    return report


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

    bits = MODE_INFO[mode].bits
    count = 0
    for module in model.modules():
        name = type(module).__name__
        weight = getattr(module, "weight", None)
        if bits == 8 and name == "Linear8bitLt":
            if weight is not None and weight.dtype == torch.int8:
                count += 1
        elif bits == 4 and name == "Linear4bit":
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


def _from_pretrained(
    auto_class: Any,
    request: LoadRequest,
    kwargs: dict[str, Any],
    ordinals: list[int],
) -> Any:
    from pytest_gpuinfer.loading.estimate import estimate_load

    source, mode = request.source, request.mode
    free_before = gpu_memory.free_gpu_memory(ordinals) if ordinals else {}
    oom_detail: str | None = None
    try:
        return auto_class.from_pretrained(source.name, **kwargs)
    except TypeError as error:
        unknown = _UNEXPECTED_KEYWORD.search(str(error))
        if unknown is None or unknown.group(1) not in request.kwargs:
            raise
        name = unknown.group(1)
        raise InputError(
            f"load_model got {name}={request.kwargs[name]!r}, which transformers' "
            f"{auto_class.__name__}.from_pretrained does not take ({str(error).strip()}): "
            "expected load_model's own keywords or from_pretrained's"
        ) from None
    except Exception as error:
        if not gpu_memory.is_oom(error):
            raise
        oom_detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    # Outside the except block: the traceback, and with it the partly built model in
    # from_pretrained's frames, is gone, so collecting frees its tensors.
    gpu_memory.release_memory()
    raise ModelLoadOOM(
        source.name,
        mode,
        needed_bytes=(
            estimate_load(source, mode, request.workload).weights_bytes
            if source.directory
            else None
        ),
        free_bytes=free_before,
        detail=oom_detail,
    )


def load_model(
    name_or_path: str | os.PathLike[str],
    mode: str,
    *,
    device_map: Any = DEFAULT_DEVICE_MAP,
    max_memory: str | Mapping[Any, Any] | None = None,
    task: str = "causal-lm",
    report: Report | None = None,
    workload: Workload | tuple[int, ...] | None = None,
    **kwargs: Any,
) -> LoadedModel:
    """Load a model (and its tokenizer, when the directory has one) in one inference mode.

    ``mode`` is one of fp32, fp16, bf16, int8, nf4, fastpath. ``task`` picks the Auto
    class (see :data:`~pytest_gpuinfer.probes.sources.TASKS`). ``device_map`` defaults
    to the whole model on the first visible GPU (see :data:`DEFAULT_DEVICE_MAP`);
    ``"auto"`` spreads it over every GPU. ``max_memory`` takes accelerate's dict or the
    string form "0=20GiB,cpu=64GiB". int8 options (:data:`INT8_OPTIONS`) and nf4 options
    (:data:`NF4_OPTIONS`) are keyword arguments; other keywords go to ``from_pretrained``.
    ``report`` is the probe's report; None probes this machine. ``workload`` is the
    audit's ``Workload`` or ``(batch_size, seq_len[, new_tokens])``: when given, the
    predicted peak of that ``generate()`` (the audit's workload estimate) must fit the free
    memory of the GPUs the load may use, checked before anything is loaded.

    Raises:
        InputError: bad mode, task, path, weights, max_memory or keyword arguments.
        ModeUnavailable: the report says the mode cannot run here, or is simulated.
        WorkloadDoesNotFit: the declared workload's predicted peak exceeds free memory.
        ModelLoadOOM: CUDA ran out of memory during the load (the memory was released).
    """
    request = LoadRequest.build(
        name_or_path,
        mode,
        device_map=device_map,
        max_memory=max_memory,
        task=task,
        workload=workload,
        **kwargs,
    )
    return load_request(request, report)


def load_request(request: LoadRequest, report: Report | None = None) -> LoadedModel:
    """Load a validated :class:`LoadRequest` (what :func:`load_model` does after checking)."""
    mode, source, task = request.mode, request.source, request.task
    if report is None:
        report = default_report(mode)
    gate(mode, report)

    import transformers

    if source.directory is not None:
        check_weights(source.directory)
    kwargs = dict(request.kwargs)
    auto_class = getattr(transformers, TASKS[task])
    options = {k: kwargs.pop(k) for k in request.info.load_options if k in kwargs}
    config = _load_config(transformers, source)
    model_class = model_class_for(auto_class, config)
    if model_class is None and getattr(auto_class, "_model_mapping", None) is not None:
        raise InputError(
            f"task {task!r} does not fit model type {config.model_type!r} of {source.name}: "
            f"{TASKS[task]} has no class for it (try task {infer_task_from_config(config)!r})"
        )

    device_map, max_memory = gpu_memory.resolve_default_placement(
        request.device_map, request.max_memory
    )
    on_gpu = gpu_memory.targets_gpu(device_map)
    plan = plan_load(
        mode,
        report=report,
        options=options,
        kwargs=kwargs,
        on_gpu=on_gpu,
        model_type=getattr(config, "model_type", None),
        model_class=model_class,
    )
    load_kwargs: dict[str, Any] = {**kwargs, **plan.kwargs, dtype_keyword(): plan.dtype}
    load_kwargs["device_map"] = device_map
    if max_memory is not None:
        load_kwargs["max_memory"] = max_memory
    ordinals = gpu_memory.gpu_ordinals(device_map, max_memory)
    if request.workload is not None and ordinals:
        check_workload_fits(request, ordinals)

    started = time.perf_counter()
    model = _from_pretrained(auto_class, request, load_kwargs, ordinals)
    applied, fallback, is_bt = plan.applied, plan.fallback, False
    if plan.bettertransformer:
        model, applied, fallback, is_bt = _finish_bettertransformer(
            model, auto_class, request, load_kwargs, ordinals, model_class
        )
    model.eval()
    seconds = time.perf_counter() - started

    attention = getattr(model.config, "_attn_implementation", None)
    fused = request.info.fused_attention
    if not is_bt and fused:
        applied, fallback = check_attention(applied, fallback, attention, load_kwargs)
    quantized = request.info.quantized
    layers = _count_quantized(model, mode) if quantized else 0
    if quantized and layers == 0:
        fallback = f"{applied} quantized no layer: every Linear stayed {plan.dtype}" + (
            " (llm_int8_enable_fp32_cpu_offload keeps CPU-mapped modules unquantized)"
            if options.get("llm_int8_enable_fp32_cpu_offload")
            else ""
        )
        applied = f"not quantized (fallback: {fallback})"
        warnings.warn(f"{source.name}: {fallback}", stacklevel=3)
    elif not fused and attention:
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
        quantized_layers=layers,
        fallback=fallback,
        bettertransformer=is_bt,
    )


def check_weights(directory: Path) -> None:
    """A model directory has weights, and its safetensors headers are whole (one line
    naming the file otherwise, instead of transformers' traceback)."""
    from pytest_gpuinfer.probes.safetensors_header import read_checkpoint

    if read_checkpoint(directory) is not None:
        return
    if any(p.suffix in WEIGHT_SUFFIXES for p in directory.iterdir() if p.is_file()):
        return
    raise InputError(
        f"model directory '{directory}' has a config.json but no weights: expected "
        "model.safetensors (or sharded safetensors with their index, or pytorch_model.bin)"
    )


def check_workload_fits(request: LoadRequest, ordinals: list[int]) -> None:
    """Raise :class:`WorkloadDoesNotFit` when the request's workload would not fit."""
    from pytest_gpuinfer.loading.estimate import estimate_load
    from pytest_gpuinfer.probes.memory_units import format_bytes, format_per_gpu

    workload = request.workload
    assert workload is not None
    loaded = estimate_load(request.source, request.mode, workload)
    loaded.raise_error()
    assert loaded.workload is not None
    peak = loaded.workload.peak_bytes
    free = gpu_memory.free_gpu_memory(ordinals)
    if peak <= sum(free.values()):
        return
    raise WorkloadDoesNotFit(
        f"{request.mode} workload batch {workload.batch_size} x {workload.seq_len} tokens "
        f"(+{workload.new_tokens} new) of {request.source.name} needs about "
        f"{format_bytes(peak)} at its peak; free: {format_per_gpu(free)}",
        needed_bytes=peak,
        free_bytes=free,
    )


def _load_config(transformers: Any, source: ModelSource) -> Any:
    try:
        return transformers.AutoConfig.from_pretrained(source.name)
    except (OSError, ValueError) as error:
        first = (str(error).strip().splitlines() or [""])[0][:200]
        raise InputError(f"cannot load a model config from {source.name!r}: {first}") from None


def _finish_bettertransformer(
    model: Any,
    auto_class: Any,
    request: LoadRequest,
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
    gpu_memory.release_memory()
    plan = sdpa_plan(model_class, refusal)
    load_kwargs = {**load_kwargs, **plan.kwargs}
    reloaded = _from_pretrained(auto_class, request, load_kwargs, ordinals)
    attention = getattr(reloaded.config, "_attn_implementation", None)
    applied, fallback = check_attention(plan.applied, plan.fallback, attention, load_kwargs)
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

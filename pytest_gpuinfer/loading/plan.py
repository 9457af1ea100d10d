"""Planning a load: what to pass to transformers for a mode (dtype, quantization, attention)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_gpuinfer.probes.modes import MODE_INFO

if TYPE_CHECKING:
    from pytest_gpuinfer.probes.report import Report


@dataclass
class LoadPlan:
    """The keyword arguments for ``from_pretrained`` and what they are expected to apply."""

    kwargs: dict[str, Any] = field(default_factory=dict)
    applied: str = ""
    attention: str | None = None
    """The attention implementation requested (None: transformers' default)."""
    bettertransformer: bool = False
    fallback: str | None = None
    dtype: Any = None
    """The torch dtype of the weights that stay unquantized."""


def dtype_keyword() -> str:
    """``dtype`` or ``torch_dtype``, whichever the installed transformers takes."""
    import transformers

    from pytest_gpuinfer.probes.hf_calls import dtype_keyword as keyword_for

    return keyword_for(transformers.__version__)


def plan_load(
    mode: str,
    *,
    report: Report,
    options: dict[str, Any],
    kwargs: dict[str, Any],
    on_gpu: bool,
    model_type: str | None,
    model_class: type | None,
) -> LoadPlan:
    """The plan for ``mode``; pops the keywords it consumes (``dtype``) from ``kwargs``."""
    import torch

    info = MODE_INFO[mode]
    if info.dtype_fixed:
        dtype = getattr(torch, info.weight_dtype or "float32")
        plan = LoadPlan(applied=str(dtype).removeprefix("torch."))
    elif info.quantized:
        plan = _quantization_plan(mode, options, on_gpu, report.software)
        # LLM.int8 keeps the unquantized parts in fp16 (transformers' own default, and
        # what the fp16/int8 footprint ratio compares against): the mode's kept_dtype.
        kept = info.kept_dtype or ("float16" if on_gpu else info.cpu_weight_dtype)
        default = getattr(torch, kept)
        dtype = kwargs.pop("dtype", default)
    else:
        plan = _fastpath_plan(report, model_type, model_class)
        gpu_dtype = getattr(torch, info.weight_dtype or "float16")
        dtype = kwargs.pop("dtype", gpu_dtype if on_gpu else getattr(torch, info.cpu_weight_dtype))
    plan.dtype = dtype
    return plan


def _quantization_plan(mode: str, options: dict[str, Any], on_gpu: bool, software: Any) -> LoadPlan:
    import torch

    info = MODE_INFO[mode]
    base: dict[str, Any] = dict(info.bnb_config)
    if info.bits == 8:  # LLM.int8: old transformers take load_in_8bit=, not a config
        from pytest_gpuinfer.probes.hf_calls import int8_loading_api

        if int8_loading_api(software) == "load_in_8bit":
            return LoadPlan(kwargs={**base, **options}, applied="load_in_8bit=True")
    else:
        base["bnb_4bit_compute_dtype"] = options.pop(
            "bnb_4bit_compute_dtype", torch.float16 if on_gpu else torch.float32
        )
    from transformers import BitsAndBytesConfig

    config = BitsAndBytesConfig(**base, **options)  # type: ignore[no-untyped-call]
    shown = ", ".join(
        f"{k}={str(v).removeprefix('torch.') if k.endswith('_dtype') else repr(v)}"
        for k, v in {**base, **options}.items()
    )
    return LoadPlan(kwargs={"quantization_config": config}, applied=f"BitsAndBytesConfig({shown})")


def class_supports(model_class: type | None, flag: str) -> bool:
    """Whether a model class allows a feature flag (``_supports_sdpa`` ...)."""
    if model_class is None:
        return True
    value = getattr(model_class, flag, True)
    # Some classes compute it per instance (a property): only a plain False is a refusal.
    return value is not False


def model_class_for(auto_class: Any, config: Any) -> type | None:
    """The concrete class an Auto class picks for ``config`` (None when it has none)."""
    mapping = getattr(auto_class, "_model_mapping", None)
    if mapping is None:
        return None
    try:
        found: type = mapping[type(config)]
    except (KeyError, ValueError):
        return None
    return found


def _class_name(model_class: type | None) -> str:
    return model_class.__name__ if model_class is not None else "this model class"


def _fastpath_plan(report: Report, model_type: str | None, model_class: type | None) -> LoadPlan:
    from pytest_gpuinfer.probes.hf_calls import BETTERTRANSFORMER_REFUSED_MODEL_TYPES, plan_fastpath

    gpu = report.gpus[0] if report.gpus else None
    plan = plan_fastpath(report.software, gpu, model_type=model_type)
    if plan.implementation == "bettertransformer":
        # BetterTransformer refuses models already loaded with SDPA (REFERENCE §2).
        return LoadPlan(
            kwargs={"attn_implementation": "eager"},
            applied="bettertransformer",
            attention="eager",
            bettertransformer=True,
        )
    if plan.implementation == "flash_attention_2":
        if class_supports(model_class, "_supports_flash_attn_2") and class_supports(
            model_class, "_supports_flash_attn"
        ):
            # transformers 4.34-4.35 take the boolean; attn_implementation came in 4.36.
            switch: dict[str, Any] = (
                {"use_flash_attention_2": True}
                if plan.keyword == "use_flash_attention_2"
                else {"attn_implementation": "flash_attention_2"}
            )
            return LoadPlan(
                kwargs=switch,
                applied="flash_attention_2",
                attention="flash_attention_2",
            )
        note: str | None = f"{_class_name(model_class)} has no flash_attention_2 support"
        if plan.keyword == "use_flash_attention_2":
            # transformers before 4.36 has no SDPA switch to fall back on.
            return LoadPlan(applied=f"eager (fallback: {note})", fallback=note)
    elif plan.implementation == "eager":
        # No attn_implementation keyword before transformers 4.36: pass nothing.
        return LoadPlan(applied=f"eager (fallback: {plan.reason})", fallback=plan.reason)
    else:
        # A fallback only when this stack would use BetterTransformer for another model.
        refused = (
            model_type in BETTERTRANSFORMER_REFUSED_MODEL_TYPES
            and plan_fastpath(report.software, gpu).implementation == "bettertransformer"
        )
        note = plan.reason if refused else None
    return sdpa_plan(model_class, note)


def sdpa_plan(model_class: type | None, note: str | None) -> LoadPlan:
    """Native SDPA, or eager with the reason when the class has no SDPA attention."""
    import transformers

    if not class_supports(model_class, "_supports_sdpa"):
        reason = (
            f"{_class_name(model_class)} has no SDPA attention in transformers "
            f"{transformers.__version__}"
        )
        if note:
            reason = f"{note}; {reason}"
        return LoadPlan(
            kwargs={"attn_implementation": "eager"},
            applied=f"eager (fallback: {reason})",
            attention="eager",
            fallback=reason,
        )
    applied = f"sdpa (fallback: {note})" if note else "sdpa"
    return LoadPlan(
        kwargs={"attn_implementation": "sdpa"}, applied=applied, attention="sdpa", fallback=note
    )


def check_attention(
    applied: str, fallback: str | None, attention: str | None, load_kwargs: Mapping[str, Any]
) -> tuple[str, str | None]:
    """Compare the attention transformers reports with the one requested."""
    requested = load_kwargs.get("attn_implementation")
    if requested is None or attention == requested:
        return applied, fallback
    reason = f"asked transformers for {requested}, the model reports {attention}"
    return f"{attention} (fallback: {reason})", reason

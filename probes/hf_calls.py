"""How to call transformers on the installed version: fastpath, int8 keyword, dtype keyword."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from packaging.version import InvalidVersion, Version

from pytest_gpuinfer.probes.architectures import sdpa_backends
from pytest_gpuinfer.probes.facts import Facts, UnknownFact
from pytest_gpuinfer.probes.modes import MODE_INFO
from pytest_gpuinfer.probes.report import GPUInfo, SoftwareStack

# optimum's BetterTransformer refuses these (optimum 1.27 transformation.py) and
# transformers >= 4.36 has native SDPA for them instead.
BETTERTRANSFORMER_REFUSED_MODEL_TYPES: frozenset[str] = frozenset(
    {"llama", "falcon", "whisper", "gpt_bigcode"}
)

FLASH_ATTN_MIN_CC = (8, 0)
"""flash-attn 2 runs on Ampere or newer only (flash-attention README, #562)."""
FLASH_ATTN_DTYPES = frozenset({"float16", "bfloat16"})
"""flash-attn 2 takes fp16 and bf16 inputs only."""
FLASH_ATTN_MIN_UNDER_TRANSFORMERS_5 = "2.3.3"
"""transformers 5 treats older flash-attn as absent (utils/import_utils.py)."""
SDPA_FLASH_SM75_UNTIL_TORCH = "2.2"
"""Up to torch 2.1 SDPA's flash kernel covered sm75-sm90; later ones need sm80+ (sdp_utils.cpp)."""


def native_sdpa(f: Facts) -> bool:
    return f.at_least("transformers", "4.36") and f.at_least("torch", "2.1.1")


def flash_attn_usable(f: Facts) -> bool:
    """flash-attn installed, new enough for this transformers, the GPU Ampere+, fp16 weights."""
    if f.gpu is None or not f.has("flash-attn"):
        return False
    if MODE_INFO["fastpath"].weight_dtype not in FLASH_ATTN_DTYPES:
        return False
    if (
        f.has("transformers")
        and f.at_least("transformers", "5.0.0.dev0")
        and not f.at_least("flash-attn", FLASH_ATTN_MIN_UNDER_TRANSFORMERS_5)
    ):
        return False
    return f.cc >= FLASH_ATTN_MIN_CC


def sdpa_kernels(f: Facts) -> tuple[str, ...]:
    """The fused SDPA kernels this GPU qualifies for under the torch in play."""
    if f.gpu is None:
        return ("cpu",)
    kernels = [b for b in sdpa_backends(f.cc) if b != "math"]
    try:
        old_torch = f.has("torch") and f.version("torch") < Version(SDPA_FLASH_SM75_UNTIL_TORCH)
    except UnknownFact:
        old_torch = False
    if old_torch and "flash" not in kernels and (7, 5) <= f.cc <= (9, 0):
        kernels.insert(0, "flash")
    return tuple(kernels)


def bettertransformer_usable(f: Facts) -> bool:
    return (
        f.has("optimum")
        and f.version("optimum") < Version("2")
        and f.version("transformers") < Version("4.49")
    )


@dataclass(frozen=True)
class FastpathPlan:
    implementation: Literal["bettertransformer", "sdpa", "flash_attention_2"]
    reason: str
    kernels: tuple[str, ...] = ()


def plan_fastpath(
    software: SoftwareStack, gpu: GPUInfo | None, model_type: str | None = None
) -> FastpathPlan:
    """What the fastpath resolves to on this stack (and, given one, for this model type).

    BetterTransformer where optimum allows it and the architecture is eligible; else
    flash_attention_2 when flash-attn is installed and the GPU qualifies; else SDPA.
    """
    f = Facts(software=software, gpu=gpu)
    try:
        kernels = sdpa_kernels(f)
    except UnknownFact:
        kernels = ()
    try:
        bettertransformer = bettertransformer_usable(f)
    except UnknownFact:
        bettertransformer = False
    refused = model_type is not None and model_type in BETTERTRANSFORMER_REFUSED_MODEL_TYPES
    if bettertransformer and not refused:
        reason = (
            f"optimum {software.version('optimum')} BetterTransformer with "
            f"transformers {software.version('transformers')} (< 4.49)"
        )
        if model_type is None:
            refusals = ", ".join(sorted(BETTERTRANSFORMER_REFUSED_MODEL_TYPES))
            reason += (
                f" for the architectures optimum accepts; native SDPA for {refusals} "
                "(optimum refuses them)"
            )
        return FastpathPlan("bettertransformer", reason, kernels)
    try:
        flash_ok = flash_attn_usable(f)
    except UnknownFact:
        flash_ok = False
    if flash_ok:
        return FastpathPlan(
            "flash_attention_2",
            f"flash-attn {software.version('flash-attn')} on {f.gpu_label}",
            kernels,
        )
    why = "native SDPA"
    if refused and bettertransformer:
        why += f" (BetterTransformer refuses model type {model_type!r})"
    elif software.version("optimum") and not bettertransformer:
        why += " (BetterTransformer needs optimum < 2 with transformers < 4.49)"
    backends = ", ".join(kernels) if kernels else "math kernel only"
    return FastpathPlan("sdpa", f"{why}; kernels: {backends}", kernels)


def int8_loading_api(software: SoftwareStack) -> Literal["quantization_config", "load_in_8bit"]:
    """How the installed transformers takes LLM.int8: ``load_in_8bit`` was removed in 5.0."""
    raw = software.version("transformers")
    if raw is not None:
        try:
            if Version(raw) < Version("4.30"):
                return "load_in_8bit"
        except InvalidVersion:
            pass
    return "quantization_config"


DTYPE_KEYWORD_SINCE = "4.56"
"""transformers renamed from_pretrained's ``torch_dtype=`` to ``dtype=`` in 4.56 (the old
name stays an alias in 5.x; 4.x before 4.56 passes an unknown ``dtype=`` to the model's
``__init__``, which raises)."""


def dtype_keyword(transformers_version: str) -> Literal["dtype", "torch_dtype"]:
    """The keyword the installed transformers takes for the load dtype."""
    try:
        recent = Version(transformers_version) >= Version(DTYPE_KEYWORD_SINCE)
    except InvalidVersion:
        recent = True
    return "dtype" if recent else "torch_dtype"

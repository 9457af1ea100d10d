"""How to call transformers on the installed version: fastpath, int8 keyword, dtype keyword."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from packaging.version import InvalidVersion, Version

from pytest_gpuinfer.probes import fastpath_facts
from pytest_gpuinfer.probes.architectures import sdpa_backends
from pytest_gpuinfer.probes.facts import Facts, UnknownFact
from pytest_gpuinfer.probes.modes import MODE_INFO
from pytest_gpuinfer.probes.report import GPUInfo, SoftwareStack

# optimum's BetterTransformer refuses these (optimum 1.27 transformation.py) and
# transformers >= 4.36 has native SDPA for them instead.
BETTERTRANSFORMER_REFUSED_MODEL_TYPES: frozenset[str] = frozenset(
    {"llama", "falcon", "whisper", "gpt_bigcode"}
)

FLASH_ATTN_DTYPES = frozenset({"float16", "bfloat16"})
"""flash-attn 2 takes fp16 and bf16 inputs only (flash_api.cpp: q_dtype check)."""
SDPA_FLASH_SM75_UNTIL_TORCH = "2.2"
"""Up to torch 2.1 SDPA's flash kernel covered sm75-sm90; later ones need sm80+ (sdp_utils.cpp)."""


def _transformers(f: Facts) -> fastpath_facts.TransformersRelease | None:
    raw = f.software.version("transformers")
    return fastpath_facts.transformers_release(raw) if raw else None


def native_sdpa(f: Facts) -> bool:
    """transformers takes ``attn_implementation="sdpa"`` and this torch meets its floor."""
    tf = _transformers(f)
    if tf is None or not tf.cited("attn_implementation").value:
        return False
    if "sdpa" not in tf.cited("attn_names").value:
        return False
    floor = tf.cited("sdpa_torch_floor").value or tf.cited("torch_floor").value
    return floor is None or f.at_least("torch", floor)


def sdpa_source(f: Facts) -> str:
    """Where the SDPA switch and its torch floor were read, for the release in play."""
    tf = _transformers(f)
    if tf is None:
        return "transformers modeling_utils.py (attn_implementation from 4.36)"
    floor = tf.cited("sdpa_torch_floor")
    if floor.value is None:
        floor = tf.cited("torch_floor")
    return f"{tf.cited('attn_names').where}; {floor.where}"


@dataclass(frozen=True)
class FlashAttnCheck:
    usable: bool
    why: str
    """Why it runs, or why not (empty when flash-attn is simply not installed)."""
    keyword: Literal["attn_implementation", "use_flash_attention_2"] = "attn_implementation"


def flash_attn_check(f: Facts) -> FlashAttnCheck:
    """Whether flash-attention 2 runs here: transformers' switch and floor, the GPU, the wheel."""
    if not f.has("flash-attn") or not f.has("transformers"):
        return FlashAttnCheck(False, "")
    installed = f.pkg("flash-attn")
    tf = _transformers(f)
    if tf is None:
        return FlashAttnCheck(
            False,
            f"{installed} ignored: {f.pkg('transformers')} predates the releases read (4.30+)",
        )
    keyword: Literal["attn_implementation", "use_flash_attention_2"]
    names = tf.cited("attn_names")
    if tf.cited("attn_implementation").value and "flash_attention_2" in names.value:
        keyword = "attn_implementation"
    elif tf.cited("use_flash_attention_2").value:
        keyword = "use_flash_attention_2"
    else:
        switch = tf.cited("use_flash_attention_2").where
        return FlashAttnCheck(
            False,
            f"{installed} ignored: {f.pkg('transformers')} has no "
            f"flash-attention 2 switch (no use_flash_attention_2: {switch})",
        )
    floor = fastpath_facts.flash_floor(tf)
    if floor is not None and not fastpath_facts.meets_floor(
        f.software.version("flash-attn") or "", floor
    ):
        return FlashAttnCheck(
            False,
            f"{installed} is below {f.pkg('transformers')}'s floor "
            f"(flash-attn {floor[0]} {floor[1]}, {floor[2]}), which treats it "
            "as absent",
        )
    if MODE_INFO["fastpath"].weight_dtype not in FLASH_ATTN_DTYPES:
        return FlashAttnCheck(False, f"{installed} takes fp16/bf16 only")
    if f.gpu is None:
        return FlashAttnCheck(False, f"{installed} needs a CUDA GPU")
    fa = fastpath_facts.flash_attn_release(f.software.version("flash-attn") or "")
    if fa is None:
        return FlashAttnCheck(False, f"{installed} predates the releases read (2.0.9+)")
    accepted, where = fastpath_facts.runtime_accepts(fa, f.cc)
    if not accepted:
        return FlashAttnCheck(
            False,
            f"{installed} refuses {f.gpu_label} ('FlashAttention only "
            f"supports Ampere GPUs or newer', {where})",
        )
    kernels = fastpath_facts.wheel_kernels(fa, f.cc, f.torch_cuda)
    if kernels.state != "yes":
        prefix = "unconfirmed: " if kernels.state == "unconfirmed" else ""
        return FlashAttnCheck(
            False, f"{prefix}{installed} has no kernel for {f.gpu_label}: {kernels.detail}"
        )
    return FlashAttnCheck(
        True,
        f"{installed} on {f.gpu_label} ({kernels.detail}; {keyword} in {f.pkg('transformers')})",
        keyword,
    )


def flash_attn_usable(f: Facts) -> bool:
    return flash_attn_check(f).usable


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
    """optimum < 2 with transformers < 4.49 (optimum PRs #2198, #2305); the method itself is
    read per release (``to_bettertransformer`` in modeling_utils.py, gone in 5.0)."""
    if not (
        f.has("optimum")
        and f.version("optimum") < Version("2")
        and f.version("transformers") < Version("4.49")
    ):
        return False
    tf = _transformers(f)
    return tf is None or bool(tf.cited("to_bettertransformer").value)


@dataclass(frozen=True)
class FastpathPlan:
    implementation: Literal["bettertransformer", "sdpa", "flash_attention_2", "eager"]
    reason: str
    kernels: tuple[str, ...] = ()
    keyword: Literal["attn_implementation", "use_flash_attention_2"] = "attn_implementation"
    """How flash-attention 2 is asked for: ``use_flash_attention_2=True`` on 4.34-4.35."""

    @property
    def call(self) -> str:
        """The from_pretrained argument that selects this attention, as text."""
        if self.implementation == "flash_attention_2" and self.keyword == "use_flash_attention_2":
            return "use_flash_attention_2=True"
        if self.implementation == "eager":
            return "no attention switch (eager attention)"
        return f"attn_implementation={self.implementation!r}"


def plan_fastpath(
    software: SoftwareStack, gpu: GPUInfo | None, model_type: str | None = None
) -> FastpathPlan:
    """What the fastpath resolves to on this stack (and, given one, for this model type).

    BetterTransformer where optimum allows it and the architecture is eligible; else
    flash-attention 2 when transformers, flash-attn, the GPU and its wheel all allow it;
    else SDPA where transformers has it; else eager (no fused path at all).
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
        flash = flash_attn_check(f)
    except UnknownFact as unknown:
        flash = FlashAttnCheck(False, f"flash-attn: unknown, because {unknown}")
    if flash.usable:
        return FastpathPlan("flash_attention_2", flash.why, kernels, flash.keyword)
    try:
        sdpa = native_sdpa(f)
    except UnknownFact:
        sdpa = False
    notes = [flash.why] if flash.why else []
    if refused and bettertransformer:
        notes.append(f"BetterTransformer refuses model type {model_type!r}")
    elif software.version("optimum") and not bettertransformer:
        notes.append("BetterTransformer needs optimum < 2 with transformers < 4.49")
    tail = f" ({'; '.join(notes)})" if notes else ""
    if not sdpa:
        return FastpathPlan("eager", f"no fused attention: eager{tail}", kernels)
    backends = ", ".join(kernels) if kernels else "math kernel only"
    return FastpathPlan("sdpa", f"native SDPA{tail}; kernels: {backends}", kernels)


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

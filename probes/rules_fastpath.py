"""Rule rows for the fastpath (fused attention: native SDPA, flash-attn, BetterTransformer).

The release bounds in the requirement text come from probes/data/fastpath.json (read from
the transformers wheels by scripts/generate_fastpath_facts.py), not from memory.
"""

from __future__ import annotations

from pytest_gpuinfer.probes import fastpath_facts
from pytest_gpuinfer.probes.architectures import SDPA_BACKENDS
from pytest_gpuinfer.probes.facts import Facts
from pytest_gpuinfer.probes.hf_calls import (
    bettertransformer_usable,
    flash_attn_check,
    native_sdpa,
)
from pytest_gpuinfer.probes.report import Status
from pytest_gpuinfer.probes.rule import Rule

FASTPATH = frozenset({"fastpath"})


def _minor(release: str | None) -> str:
    return ".".join((release or "?").split(".")[:2])


def _sdpa_bound() -> str:
    first = fastpath_facts.first_release("attn_names", name="sdpa")
    tf = fastpath_facts.transformers_release(first or "")
    floor = tf.cited("sdpa_torch_floor").value if tf else None
    return f"transformers >= {_minor(first)} with torch >= {floor or '?'}"


def _flash_bound() -> str:
    kw_first = fastpath_facts.first_release("use_flash_attention_2")
    attn_first = fastpath_facts.first_release("attn_names", name="flash_attention_2")
    return (
        f"use_flash_attention_2=True from transformers {_minor(kw_first)}, "
        f"attn_implementation='flash_attention_2' from {_minor(attn_first)}"
    )


def _found(f: Facts) -> str:
    text = f"{f.pkg('transformers')}, {f.pkg('torch')}, {f.pkg('optimum')}, {f.pkg('flash-attn')}"
    why = flash_attn_check(f).why
    return f"{text} ({why})" if why else text


FASTPATH_RULES: tuple[Rule, ...] = (
    Rule(
        id="fastpath-needs-sdpa-or-bettertransformer",
        modes=FASTPATH,
        device="any",
        requirement=f"the fastpath needs native SDPA ({_sdpa_bound()}), flash-attention 2 "
        f"({_flash_bound()}, flash-attn at transformers' floor, on a GPU it has kernels for) "
        "or BetterTransformer (optimum < 2 with transformers < 4.49)",
        otherwise=Status.UNSUPPORTED,
        source="transformers modeling_utils.py and utils/import_utils.py per release "
        "(probes/data/fastpath.json); optimum PRs #2198, #2305",
        applies=lambda f: f.has("torch") and f.has("transformers"),
        holds=lambda f: native_sdpa(f) or bettertransformer_usable(f) or flash_attn_check(f).usable,
        found=_found,
    ),
    Rule(
        id="fastpath-fused-kernel",
        modes=FASTPATH,
        device="cuda",
        requirement="fused SDPA kernels need compute capability >= 5.0 (memory-efficient) "
        "or >= 8.0 (flash, cuDNN); below that SDPA runs its math kernel",
        otherwise=Status.DEGRADED,
        source="PyTorch sdp_utils (PLATFORM_SUPPORTS_FLASH_ATTENTION = SM80OrLater)",
        applies=lambda f: not flash_attn_check(f).usable,
        holds=lambda f: f.cc >= SDPA_BACKENDS["memory-efficient"],
        found=lambda f: f.gpu_label,
    ),
)

"""Rule rows for the fastpath (fused attention: native SDPA, flash-attn, BetterTransformer)."""

from __future__ import annotations

from pytest_gpuinfer.probes.architectures import SDPA_BACKENDS
from pytest_gpuinfer.probes.hf_calls import bettertransformer_usable, native_sdpa
from pytest_gpuinfer.probes.report import Status
from pytest_gpuinfer.probes.rule import Rule, always

FASTPATH = frozenset({"fastpath"})

FASTPATH_RULES: tuple[Rule, ...] = (
    Rule(
        id="fastpath-needs-sdpa-or-bettertransformer",
        modes=FASTPATH,
        device="any",
        requirement="the fastpath needs native SDPA (transformers >= 4.36 with torch >= 2.1.1) "
        "or BetterTransformer (optimum < 2 with transformers < 4.49)",
        otherwise=Status.UNSUPPORTED,
        source="transformers modeling_utils.py; optimum PRs #2198, #2305",
        applies=lambda f: f.has("torch") and f.has("transformers"),
        holds=lambda f: native_sdpa(f) or bettertransformer_usable(f),
        found=lambda f: f"{f.pkg('transformers')}, {f.pkg('torch')}, {f.pkg('optimum')}",
    ),
    Rule(
        id="fastpath-fused-kernel",
        modes=FASTPATH,
        device="cuda",
        requirement="fused SDPA kernels need compute capability >= 5.0 (memory-efficient) "
        "or >= 8.0 (flash, cuDNN); below that SDPA runs its math kernel",
        otherwise=Status.DEGRADED,
        source="PyTorch sdp_utils (PLATFORM_SUPPORTS_FLASH_ATTENTION = SM80OrLater)",
        applies=always,
        holds=lambda f: f.cc >= SDPA_BACKENDS["memory-efficient"],
        found=lambda f: f.gpu_label,
    ),
)

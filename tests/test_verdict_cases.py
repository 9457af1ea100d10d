"""The public table of verdicts: (GPU profile with overrides, mode) -> verdict and exit codes.

Every row pins the packages it depends on, so the table reads the same on any machine, and
cites where its verdict comes from. Rows the sources do not settle are marked UNSETTLED and
expect "unknown" or "degraded, unconfirmed" rather than a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from pytest_gpuinfer.cli.main import main
from pytest_gpuinfer.probes.probe import probe
from pytest_gpuinfer.probes.rule import UNCONFIRMED


def stack(base: str, **changes: str) -> str:
    """An override list with some versions replaced ("flash_attn" names flash-attn)."""
    versions = dict(item.split("=") for item in base.split(","))
    versions.update({k.replace("_", "-"): v for k, v in changes.items()})
    return ",".join(f"{k}={v}" for k, v in versions.items())


CURRENT = "torch=2.11.0,transformers=5.23.0,accelerate=1.15.0,bitsandbytes=0.50.2"
LEGACY = "torch=2.5.1,transformers=4.48.3,accelerate=1.2.1,bitsandbytes=0.44.1,optimum=1.24.0"
SEED = "torch=2.0.1,transformers=4.29.2,accelerate=0.19.0"
HF4 = "torch=2.5.1,transformers=4.48.3,accelerate=1.2.1"

# sources, short names for the rows below
TORCH_OLD = "cuobjdump of pytorch packages (moi90/pytorch_compute_capabilities)"
TORCH_MATRIX = "pytorch RELEASE.md CUDA support matrix; pytorch#172352, #182250"
FP16_RATE = "CUDA C++ Programming Guide throughput table; P40/P100 datasheets; exllama#27"
CUBLAS = "cuBLAS docs: 16-bit-input GEMMs need compute capability >= 5.0"
BNB_SCRIPTS = "bitsandbytes build-cuda.sh / python-package.yml at the tag"
HF5 = "transformers 5 utils/import_utils.py"
HF4_QUANT = "transformers 4.48 quantizers/quantizer_bnb_{8,4}bit.py"
UNSETTLED = True


@dataclass(frozen=True)
class VerdictCase:
    profile: str
    mode: str
    status: str
    """ "supported", "degraded", "unsupported", "unknown"."""
    exit_code: int
    strict_exit_code: int
    source: str
    unsettled: bool = False
    """The sources disagree or are silent: the verdict says "unknown" or "unconfirmed"."""
    reason_contains: str = ""


CASES: tuple[VerdictCase, ...] = (
    # --- which torch builds can drive the GPU ----------------------------------------------
    VerdictCase(f"k80@{CURRENT}", "fp32", "unsupported", 1, 1, TORCH_MATRIX, False, "sm_37"),
    VerdictCase(f"k80@{LEGACY}", "fp32", "supported", 0, 0, TORCH_OLD + " (2.5.1 cu118: sm_37)"),
    VerdictCase(
        "k80@torch=2.7.0,transformers=4.48.3", "fp32", "supported", 0, 0, TORCH_OLD + " (2.7 cu118)"
    ),
    VerdictCase(
        "k80@torch=2.8.0,transformers=4.48.3",
        "fp32",
        "unsupported",
        1,
        1,
        TORCH_MATRIX + " (2.8: cu126, cu128, cu129)",
        False,
        "torch 2.7 cu118",
    ),
    VerdictCase("b200@" + stack(CURRENT, torch="2.6.0"), "fp16", "unsupported", 1, 1, TORCH_OLD),
    VerdictCase("b200@torch=2.7.0,transformers=4.57.0", "fp16", "supported", 0, 0, TORCH_OLD),
    VerdictCase(
        "p100@torch=2.8.0+cu128,transformers=4.57.0", "fp32", "unsupported", 1, 1, TORCH_MATRIX
    ),
    VerdictCase(
        "p100@torch=2.8.0+cu126,transformers=4.57.0", "fp32", "supported", 0, 0, TORCH_MATRIX
    ),
    VerdictCase(
        "p100@torch=2.8.0,transformers=4.57.0",
        "fp32",
        "supported",
        0,
        0,
        TORCH_MATRIX + " (best official build assumed: cu126)",
        False,
        "torch 2.8.0+cu126",
    ),
    VerdictCase(
        "v100@" + stack(CURRENT, torch="2.11.0+cu128"), "fp16", "unsupported", 1, 1, TORCH_MATRIX
    ),
    VerdictCase(
        "v100@" + stack(CURRENT, torch="2.10.0+cu128"), "fp16", "supported", 0, 0, TORCH_MATRIX
    ),
    VerdictCase(
        "v100@" + stack(CURRENT, torch="2.11.0+cu130"), "fp32", "unsupported", 1, 1, TORCH_MATRIX
    ),
    VerdictCase(f"v100@{CURRENT}", "fp16", "supported", 0, 0, TORCH_MATRIX + " (cu126 assumed)"),
    VerdictCase(
        "t4@" + stack(CURRENT, torch="2.6.0+cu128"),
        "fp32",
        "unknown",
        1,
        1,
        "no official torch 2.6 build for CUDA 12.8 (probes/builds.py)",
        False,
        "not an official build",
    ),
    VerdictCase("p100@" + stack(CURRENT, torch="2.5.1"), "fp32", "unsupported", 1, 1, HF5),
    VerdictCase("p100@" + stack(CURRENT, torch="2.6.0"), "fp32", "supported", 0, 0, HF5),
    # --- each chip's fp16 arithmetic, and the bf16 policy ----------------------------------
    VerdictCase(f"p100@{CURRENT}", "fp16", "supported", 0, 0, FP16_RATE),
    VerdictCase(f"gtx1660@{CURRENT}", "fp16", "supported", 0, 0, FP16_RATE),
    VerdictCase(f"p40@{CURRENT}", "fp16", "degraded", 0, 1, FP16_RATE, False, "1/64"),
    VerdictCase(f"p40@{CURRENT}", "fastpath", "degraded", 0, 1, FP16_RATE, False, "1/64"),
    VerdictCase(f"k80@{LEGACY}", "fp16", "unsupported", 1, 1, CUBLAS),
    VerdictCase(f"k80@{LEGACY}", "fastpath", "unsupported", 1, 1, CUBLAS),
    VerdictCase(f"k80@{LEGACY}", "bf16", "unsupported", 1, 1, CUBLAS),
    VerdictCase(
        f"t4@{CURRENT}", "bf16", "unsupported", 1, 1, "policy: emulated bf16 counts as unsupported"
    ),
    VerdictCase(f"a10@{CURRENT}", "bf16", "supported", 0, 0, "NVIDIA Ampere whitepaper"),
    # --- which bitsandbytes binaries exist, and its int8 path per GPU ---------------------
    VerdictCase(
        "t4@" + stack(SEED, bitsandbytes="0.36.0"),
        "int8",
        "unsupported",
        1,
        1,
        "bitsandbytes 0.36.0 wheel contents (only *_nocublaslt libraries)",
        False,
        "lacks",
    ),
    VerdictCase(
        "t4@" + stack(SEED, bitsandbytes="0.36.0.post2"),
        "int8",
        "supported",
        0,
        0,
        "0.36.0.post2 wheel",
    ),
    VerdictCase(
        "v100@" + stack(SEED, bitsandbytes="0.36.0.post2"),
        "int8",
        "unsupported",
        1,
        1,
        "HF Efficient Inference on a Single GPU (v4.29)",
    ),
    VerdictCase(
        "gtx1660@" + stack(SEED, bitsandbytes="0.37.2"),
        "int8",
        "unsupported",
        1,
        1,
        "bitsandbytes commit 5e456be5 (GTX 16xx fallback from 0.38.0)",
    ),
    VerdictCase(
        "gtx1660@" + stack(SEED, bitsandbytes="0.38.0"),
        "int8",
        "degraded",
        0,
        1,
        "bitsandbytes 5e456be5",
    ),
    VerdictCase(
        "k80@" + stack(SEED, bitsandbytes="0.38.1"),
        "int8",
        "degraded",
        0,
        1,
        "0.38.1 libbitsandbytes_cuda117_nocublaslt.so (sm_37); 0.37.0 changelog (16-bit fallback)",
    ),
    VerdictCase(
        "k80@" + stack(SEED, bitsandbytes="0.39.0"),
        "int8",
        "degraded",
        0,
        1,
        "0.39.0 libbitsandbytes_cuda117_nocublaslt.so still holds sm_37 (fatbin headers)",
    ),
    VerdictCase(
        "k80@" + stack(SEED, bitsandbytes="0.39.1"),
        "int8",
        "unsupported",
        1,
        1,
        "0.39.1 wheel: no library holds sm_35/sm_37 (probes/data/bnb_binaries.json)",
        False,
        "0.39.0 ship code for it",
    ),
    VerdictCase(f"k80@{LEGACY}", "int8", "unsupported", 1, 1, BNB_SCRIPTS + " 0.44 (sm_50+)"),
    VerdictCase(f"v100@{LEGACY}", "int8", "degraded", 0, 1, "bitsandbytes 0.37.0 changelog"),
    VerdictCase(
        f"p100@{CURRENT}",
        "int8",
        "degraded",
        0,
        1,
        "bitsandbytes 0.45 MatMul8bitLt; REFERENCE §8 open question",
        UNSETTLED,
    ),
    VerdictCase(
        f"gtx1660@{CURRENT}",
        "int8",
        "degraded",
        0,
        1,
        "bitsandbytes 0.45 MatMul8bitLt; REFERENCE §8 open question",
        UNSETTLED,
    ),
    VerdictCase(f"h100@{LEGACY}", "int8", "unsupported", 1, 1, "bitsandbytes issue #538"),
    VerdictCase(
        "h100@" + stack(HF4, bitsandbytes="0.45.0"), "int8", "supported", 0, 0, "0.45.0 notes"
    ),
    VerdictCase(
        "b200@torch=2.7.0,transformers=4.57.0,accelerate=1.2.1,bitsandbytes=0.45.2",
        "int8",
        "unsupported",
        1,
        1,
        BNB_SCRIPTS + " 0.45.2 (no CUDA 12.8 library)",
        False,
        "none for CUDA 12.8",
    ),
    VerdictCase(
        "b200@torch=2.7.0,transformers=4.57.0,accelerate=1.2.1,bitsandbytes=0.45.3",
        "int8",
        "supported",
        0,
        0,
        BNB_SCRIPTS + " 0.45.3 (cuda128: sm_100, sm_120)",
    ),
    VerdictCase(
        "b200@torch=2.11.0+cu130,transformers=4.57.0,accelerate=1.2.1,bitsandbytes=0.47.0",
        "nf4",
        "unsupported",
        1,
        1,
        BNB_SCRIPTS + " 0.47.0 (no CUDA 13 library)",
    ),
    VerdictCase(
        "b200@torch=2.11.0+cu130,transformers=4.57.0,accelerate=1.2.1,bitsandbytes=0.48.0",
        "nf4",
        "supported",
        0,
        0,
        BNB_SCRIPTS + " 0.48.0",
    ),
    VerdictCase(
        "v100@" + stack(CURRENT, torch="2.11.0+cu130"),
        "nf4",
        "unsupported",
        1,
        1,
        BNB_SCRIPTS + " 0.50",
    ),
    # --- version floors between packages --------------------------------------------------
    # These pairs name torch's CUDA build: a plain "2.11.0" / "2.5.1" is the PyPI wheel
    # (cu130 / cu124, probes/data/torch_platforms.json), for which these bitsandbytes
    # releases ship no library (probes/data/bnb_binaries.json), so the floor would not be
    # the only thing refused.
    VerdictCase(
        "h100@" + stack(CURRENT, torch="2.11.0+cu128", bitsandbytes="0.46.0"),
        "int8",
        "unsupported",
        1,
        1,
        HF5,
    ),
    VerdictCase(
        "h100@" + stack(CURRENT, torch="2.11.0+cu128", bitsandbytes="0.46.1"),
        "int8",
        "supported",
        0,
        0,
        HF5,
    ),
    VerdictCase(
        "a100@" + stack(HF4, torch="2.5.1+cu121", bitsandbytes="0.37.1"),
        "int8",
        "unsupported",
        1,
        1,
        HF4_QUANT,
    ),
    VerdictCase(
        "a100@" + stack(HF4, torch="2.5.1+cu121", bitsandbytes="0.37.2"),
        "int8",
        "supported",
        0,
        0,
        HF4_QUANT,
    ),
    VerdictCase(
        "a100@" + stack(HF4, torch="2.5.1+cu121", bitsandbytes="0.38.1"),
        "nf4",
        "unsupported",
        1,
        1,
        HF4_QUANT,
    ),
    VerdictCase(
        "a100@" + stack(HF4, torch="2.5.1+cu121", bitsandbytes="0.39.0"),
        "nf4",
        "supported",
        0,
        0,
        HF4_QUANT,
    ),
    VerdictCase(
        "a100@" + stack(CURRENT, accelerate="0.11.0"),
        "int8",
        "unsupported",
        1,
        1,
        "seed doc (v4.29)",
    ),
    # --- fastpath ---------------------------------------------------------------------------
    VerdictCase(
        "a100@torch=2.1.0,transformers=4.35.2,optimum=2.0.0",
        "fastpath",
        "unsupported",
        1,
        1,
        "transformers modeling_utils.py (SDPA from 4.36); optimum PRs #2198, #2305",
    ),
    VerdictCase(
        "a100@torch=2.1.1,transformers=4.36.0,optimum=2.0.0",
        "fastpath",
        "supported",
        0,
        0,
        "transformers 4.36 modeling_utils.py",
    ),
    VerdictCase(
        f"a100@{LEGACY}",
        "fastpath",
        "supported",
        0,
        0,
        "optimum 1.27 transformation.py (refused architectures)",
        False,
        "native SDPA for falcon, gpt_bigcode, llama, whisper",
    ),
)


def _id(case: VerdictCase) -> str:
    return f"{case.profile.split('@')[0]}-{case.mode}-{case.status}-{CASES.index(case)}"


def test_the_table_is_big_enough_and_sourced() -> None:
    assert len(CASES) >= 40
    assert all(case.source for case in CASES)
    assert len({(c.profile, c.mode) for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_verdict_case(case: VerdictCase, capsys: pytest.CaptureFixture[str]) -> None:
    verdict = probe(case.profile, modes=[case.mode]).verdicts[case.mode]
    assert verdict.status.value == case.status, verdict.reason
    unconfirmed = any(f.message.startswith(UNCONFIRMED) for f in verdict.findings)
    if case.unsettled:
        assert case.status == "unknown" or unconfirmed, verdict.reason
    else:
        assert not unconfirmed, verdict.reason
    assert case.reason_contains in verdict.reason + " " + (verdict.resolves_to or "")
    argv = ["audit", "--profile", case.profile, "--modes", case.mode]
    assert main(argv) == case.exit_code
    assert main([*argv, "--strict"]) == case.strict_exit_code
    capsys.readouterr()

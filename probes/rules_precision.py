"""Rule rows for the reference precisions: each chip's fp16 arithmetic, and the bf16 policy."""

from __future__ import annotations

from pytest_gpuinfer.probes.architectures import TENSOR_CORE_PRECISIONS
from pytest_gpuinfer.probes.facts import Facts
from pytest_gpuinfer.probes.report import Status
from pytest_gpuinfer.probes.rule import HALF, Rule, always, never

HALF_GEMM_MIN_CC = (5, 0)
"""cuBLAS runs matrix multiplies with 16-bit inputs (cublasGemmEx / cublasSgemmEx) only from
compute capability 5.0; Kepler has no fp16 arithmetic at all (storage only)."""

# 16-bit floating-point results per clock per SM, CUDA C++ Programming Guide, "Arithmetic
# Instructions" throughput table, beside the fp32 rate of the same chip.
_FP16_SLOW: dict[tuple[int, int], str] = {
    (5, 0): "no fp16 arithmetic on Maxwell 5.0 (storage only; math runs in fp32)",
    (5, 2): "no fp16 arithmetic on Maxwell 5.2 (storage only; math runs in fp32)",
    (6, 1): "fp16 runs at 1/64 of the fp32 rate on sm_61 (GP102/GP104: P40, P4, GTX 10xx)",
}

BF16_FULL_SPEED_FROM = TENSOR_CORE_PRECISIONS["bf16"]


def _fp16_rate_ok(f: Facts) -> bool:
    return f.cc not in _FP16_SLOW


PRECISION_RULES: tuple[Rule, ...] = (
    Rule(
        id="half-gemm-needs-maxwell",
        modes=HALF | {"bf16"},
        device="cuda",
        requirement="fp16 and bf16 matrix multiplies need compute capability >= 5.0 "
        "(Kepler has no fp16 arithmetic; cuBLAS's 16-bit-input GEMMs start at 5.0)",
        otherwise=Status.UNSUPPORTED,
        source="cuBLAS documentation (cublasSgemmEx/cublasGemmEx: compute capability 5.0 or "
        "later); NVIDIA Kepler datasheets; REFERENCE §8",
        applies=always,
        holds=lambda f: f.cc >= HALF_GEMM_MIN_CC,
        found=lambda f: f.gpu_label,
    ),
    Rule(
        id="fp16-arithmetic-rate",
        modes=HALF,
        device="cuda",
        requirement="fast fp16 needs fp16 arithmetic at least at the fp32 rate (tensor cores "
        "from 7.0; without them at 2x fp32 on 5.3, 6.0 (P100), 6.2 and GTX 16xx)",
        otherwise=Status.DEGRADED,
        source="CUDA C++ Programming Guide, arithmetic instruction throughput (16-bit: 5.0/5.2 "
        "none, 6.0 128, 6.1 2 per SM per clock); NVIDIA P40/P100 datasheets; exllama#27",
        applies=lambda f: f.cc >= HALF_GEMM_MIN_CC,
        holds=_fp16_rate_ok,
        found=lambda f: f"{f.gpu_label}: {_FP16_SLOW.get(f.cc, '')}",
    ),
    Rule(
        id="bf16-needs-ampere",
        modes=frozenset({"bf16"}),
        device="cuda",
        requirement="bf16 needs compute capability >= 8.0 (Ampere)",
        otherwise=Status.UNSUPPORTED,
        source="policy: below 8.0 torch only emulates bf16 through fp32 (slower than fp32; "
        "torch.cuda.is_bf16_supported(including_emulation=True) says True anyway, "
        "torch/cuda/__init__.py, pytorch#148322), and emulation counts as unsupported; "
        "NVIDIA Ampere whitepaper",
        applies=lambda f: f.cc >= HALF_GEMM_MIN_CC,
        holds=lambda f: f.cc >= BF16_FULL_SPEED_FROM,
        found=lambda f: f.gpu_label,
    ),
    Rule(
        id="fp16-on-cpu",
        modes=frozenset({"fp16"}),
        device="cpu",
        requirement="fp16 on a CPU runs, but through slow kernels; prefer fp32 or bf16",
        otherwise=Status.DEGRADED,
        source="PyTorch CPU kernels",
        applies=always,
        holds=never,
        found=lambda f: "a machine without a GPU",
    ),
)

"""The sources, stacks and GPU profile files that ``public_cases`` rows cite and use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

UNSETTLED = True
CURRENT = "torch=2.11.0,transformers=5.23.0,accelerate=1.15.0,bitsandbytes=0.50.2"
# A transformers 4 stack whose own floors (torch >= 2.1, accelerate >= 0.26) hold.
HF456 = "transformers=4.56.2,accelerate=1.10.0"
SEED_STACK = "transformers=4.30.2,accelerate=0.20.3"


@dataclass(frozen=True)
class VerdictCase:
    profile: str
    """A built-in profile or a ``GPU_FILES`` key, then ``@`` and the overrides."""
    mode: str
    status: str
    """ "supported", "degraded", "unsupported", "unknown"."""
    exit_code: int
    strict_exit_code: int
    source: str
    unsettled: bool = False
    """The sources are silent: the verdict must say "unknown" or "unconfirmed"."""
    reason_contains: str = ""
    """The key fact; matched case-insensitively in the reason or the resolved call."""


# GPUs that have no built-in profile on main. Memory is NVML's total where known, else
# the datasheet's; bandwidth from NVIDIA's datasheets (GB/s).
GPU_FILES: dict[str, dict[str, Any]] = {
    "rtx5090": {
        "gpu_name": "NVIDIA GeForce RTX 5090",
        "compute_capability": "12.0",
        "memory": "32607MiB",
        "memory_bandwidth_gb_per_s": 1792,
    },
    "tesla-m40": {
        "gpu_name": "Tesla M40 24GB",
        "compute_capability": "5.2",
        "memory": "22945MiB",
        "memory_bandwidth_gb_per_s": 288,
    },
    "gtx1080": {
        "gpu_name": "NVIDIA GeForce GTX 1080",
        "compute_capability": "6.1",
        "memory": "8192MiB",
        "memory_bandwidth_gb_per_s": 320,
    },
    "jetson-orin": {
        "gpu_name": "Orin",
        "compute_capability": "8.7",
        "memory": "61440MiB",
        "memory_bandwidth_gb_per_s": 204.8,
        "platform": "tegra",
    },
    "gh200": {
        "gpu_name": "NVIDIA GH200 480GB",
        "compute_capability": "9.0",
        "memory": "97871MiB",
        "memory_bandwidth_gb_per_s": 4000,
        "platform": "aarch64",
    },
    "h100-x86": {"base": "h100", "platform": "x86_64"},
}

# --- sources --------------------------------------------------------------------------------
TF452_TORCH = "transformers 4.52.0 wheel, utils/import_utils.py:234-236 (torch >= 2.1.0)"
TF500_TORCH = (
    "transformers 5.0.0 wheel, utils/import_utils.py:115-117 (torch >= 2.2.0); METADATA "
    'Requires-Dist: torch>=2.2; extra == "torch"'
)
BNB_META = "bitsandbytes {v} wheel METADATA: Requires-Dist: torch<3,>={floor}"
TF_ACC = (
    "transformers {v} wheel, utils/import_utils.py ACCELERATE_MIN_VERSION = {floor}; "
    "quantizers/quantizer_bnb_8bit.py validate_environment calls is_accelerate_available()"
)
BNB0354_CC = (
    "bitsandbytes 0.35.4 wheel, cuda_setup/main.py:146 has_cublaslt = cc in "
    '["7.5", "8.0", "8.6"] (else the _nocublaslt library: bitsandbytes#97, #118 '
    '"Your GPU does not support Int8 Matmul!")'
)
BNB0354_ELF = "cuobjdump of bitsandbytes 0.35.4 libbitsandbytes_cuda117.so: sm_75, sm_80, sm_86"
BNB_CPU_FALLBACK = (
    "bitsandbytes 0.43.0 wheel, cuda_setup/main.py:150-153 (library for torch's CUDA "
    "not found: 'Defaulting to libbitsandbytes_cpu.so')"
)
TORCH251_CUDA = "torch 2.5.1 x86_64 METADATA: nvidia-cuda-runtime-cu12==12.4.127 (cu124)"
BNB_LIBS = "bitsandbytes {v} wheel file list: libbitsandbytes_{libs}"
FA_AMPERE = (
    "flash-attention README (FlashAttention-2: Ampere, Ada, Hopper); flash_api.cpp "
    '"FlashAttention only supports Ampere GPUs or newer" (flash-attention#1540)'
)
FA_SM120 = (
    "flash-attention#1638 (RTX 5090, cc 12.0: no kernel image), #2361 (v2.8.3 ships no "
    "sm_120 build); transformers falls back to SDPA"
)
TF434_FA = (
    "transformers 4.34.0 wheel, modeling_utils.py:2472 (use_flash_attention_2) and "
    "_check_and_enable_flash_attn_2 (flash_attn > 2.0.0)"
)
TF435_FA = (
    "transformers 4.35.2 wheel, utils/import_utils.py:74-76 and modeling_utils.py "
    "_check_and_enable_flash_attn_2 (flash_attn >= 2.1.0, use_flash_attention_2)"
)
TF436_FA = (
    "transformers 4.36.0 wheel, utils/import_utils.py:630-631 (flash_attn >= 2.1.0 on "
    "CUDA) and is_torch_sdpa_available (torch >= 2.1.1)"
)
OPT114_BT = "optimum 1.14.0 wheel, bettertransformer/models/__init__.py (bert:67, llama:89)"
OPT125_BT = (
    "optimum 1.25.0 wheel, bettertransformer/__init__.py:19-21 (RuntimeError for "
    "transformers >= 4.49); transformers 4.49.0 import_utils.py:378 (SDPA: torch >= 2.1.1)"
)
JETSON = (
    "pinokio#1027 and dusty-nv/jetson-inference#1932 (registry torch on Jetson Orin: "
    "torch.cuda.is_available() False); Jetson needs NVIDIA's JetPack builds"
)
JETSON_SBSA = (
    "pytorch#160162 (the cu128 aarch64 wheels are SBSA builds for GH200/GB200); "
    "pinokio#1027 (generic aarch64 wheels do not drive Jetson)"
)
JETSON_BNB = "bitsandbytes#1930 (0.46.1 aarch64 wheel on Jetson Orin: fails at first kernel)"
GH200_TORCH24 = "pytorch#134790 (no CUDA-enabled linux-aarch64 torch 2.4.0; nightly only)"
GH200_TORCH28 = "pytorch#160162 (torch 2.8 aarch64 CUDA wheels on the cu128 index)"
BNB_AARCH64 = (
    "pip download --platform manylinux_2_24_aarch64 bitsandbytes: versions 0.31.8-0.42.0 "
    "(py3-none-any, x86_64 libraries: bitsandbytes#1043), none 0.43.0-0.45.5, 0.46.0 on"
)
BNB046_AARCH64 = (
    "cuobjdump of bitsandbytes 0.46.0 manylinux_2_24_aarch64 libbitsandbytes_cuda128.so: "
    "sm_75, sm_80, sm_90, sm_100"
)
CLOSED = "closed world: no release table covers {what}; the verdict cannot be confirmed"
FP16_RATE = (
    "CUDA C++ Programming Guide, arithmetic instruction throughput (cc 6.1: fp16 at 1/64 of fp32)"
)
BF16_POLICY = (
    "bf16 tensor cores from Ampere (NVIDIA A100 whitepaper); below cc 8.0 torch's "
    "is_bf16_supported() counts emulation (pytorch#148322): policy says unsupported"
)
BF16_NATIVE = "bf16 tensor cores on cc >= 8.0 (NVIDIA Ampere/Ada/Hopper whitepapers)"


def _s(*parts: str) -> str:
    """Join override lists ("torch=2.1.0", HF456, ...) into one."""
    return ",".join(parts)

"""A second public table of verdicts, each row researched from a public artefact.

(GPU profile with overrides, mode) -> verdict and exit codes, in the shape of
``test_verdict_cases.py`` and with none of its rows. Six groups, one per way a confident
verdict went wrong before: version floors between packages, bitsandbytes binaries, the
fastpath, the platform (Tegra, aarch64 servers), the closed world (versions newer than any
table) and precision per architecture. ``docs/public-cases.md`` is rendered from this data
(``render_markdown``); regenerate it with ``PYTHONPATH=. python tests/test_public_cases.py``.

GPUs without a built-in profile are written to a profile file at run time (``GPU_FILES``),
so a row does not depend on another branch's profile names. One assumption: a profile
file takes a ``platform`` key, ``"x86_64"`` (the default), ``"aarch64"`` (a server such as
GH200) or ``"tegra"`` (Jetson); only the PLATFORM rows use it.

Where a row says "wheel", the file was read from the release's wheel on PyPI
(``pip download --no-deps NAME==V``); "cuobjdump" means ``cuobjdump --list-elf`` (CUDA
13.5, package nvidia-cuda-cuobjdump) run on the library named.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_gpuinfer.cli import main
from pytest_gpuinfer.probes.probe import probe
from pytest_gpuinfer.probes.rule import UNCONFIRMED

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
TF500_TORCH = "transformers 5.0.0 wheel, utils/import_utils.py:115-117 (torch >= 2.2.0)"
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
    "CUDA C++ Programming Guide, arithmetic instruction throughput (cc 6.1: fp16 at "
    "1/64 of fp32)"
)
BF16_POLICY = (
    "bf16 tensor cores from Ampere (NVIDIA A100 whitepaper); below cc 8.0 torch's "
    "is_bf16_supported() counts emulation (pytorch#148322): policy says unsupported"
)
BF16_NATIVE = "bf16 tensor cores on cc >= 8.0 (NVIDIA Ampere/Ada/Hopper whitepapers)"


def _s(*parts: str) -> str:
    """Join override lists ("torch=2.1.0", HF456, ...) into one."""
    return ",".join(parts)


# --- 1. version floors between packages ---------------------------------------------------
FLOORS: tuple[VerdictCase, ...] = (
    VerdictCase(
        "a100@torch=2.0.1,transformers=4.52.0,accelerate=1.2.1",
        "fp16",
        "unsupported",
        1,
        1,
        TF452_TORCH,
        False,
        "2.1",
    ),
    VerdictCase(
        "a100@torch=2.1.0,transformers=4.52.0,accelerate=1.2.1",
        "fp16",
        "supported",
        0,
        0,
        TF452_TORCH,
    ),
    VerdictCase(
        "a100@torch=2.0.1,transformers=4.51.3,accelerate=1.2.1",
        "fp16",
        "supported",
        0,
        0,
        "transformers 4.51.3 wheel, utils/import_utils.py: no torch floor (first in 4.52.0)",
    ),
    VerdictCase(
        "a100@torch=2.1.2,transformers=5.0.0,accelerate=1.2.1",
        "fp16",
        "unsupported",
        1,
        1,
        TF500_TORCH,
        False,
        "2.2",
    ),
    VerdictCase(
        "a100@torch=2.4.1,transformers=5.0.0,accelerate=1.2.1",
        "fp16",
        "supported",
        0,
        0,
        TF500_TORCH + " (5.23's floor is 2.6: floors are per release)",
    ),
    VerdictCase(
        "h100@" + _s("torch=2.2.2", HF456, "bitsandbytes=0.48.0"),
        "int8",
        "unsupported",
        1,
        1,
        BNB_META.format(v="0.48.0", floor="2.3"),
        False,
        "2.3",
    ),
    VerdictCase(
        "h100@" + _s("torch=2.3.1", HF456, "bitsandbytes=0.48.0"),
        "int8",
        "supported",
        0,
        0,
        BNB_META.format(v="0.48.0", floor="2.3") + "; cuda121 library in the wheel",
    ),
    VerdictCase(
        "h100@" + _s("torch=2.3.1", HF456, "bitsandbytes=0.50.0"),
        "nf4",
        "unsupported",
        1,
        1,
        BNB_META.format(v="0.50.0", floor="2.4"),
        False,
        "2.4",
    ),
    VerdictCase(
        "a100@torch=2.1.2,transformers=4.48.3,accelerate=1.2.1,bitsandbytes=0.46.0",
        "int8",
        "unsupported",
        1,
        1,
        BNB_META.format(v="0.46.0", floor="2.2"),
        False,
        "2.2",
    ),
    VerdictCase(
        "a100@torch=2.1.1,transformers=4.45.2,accelerate=0.25.0,bitsandbytes=0.43.1",
        "int8",
        "unsupported",
        1,
        1,
        TF_ACC.format(v="4.45.2", floor='"0.26.0" (line 91)'),
        False,
        "0.26.0",
    ),
    VerdictCase(
        "a100@torch=2.1.1,transformers=4.40.2,accelerate=0.20.3,bitsandbytes=0.43.1",
        "int8",
        "unsupported",
        1,
        1,
        TF_ACC.format(v="4.40.2", floor='"0.21.0" (line 90)'),
        False,
        "0.21.0",
    ),
    VerdictCase(
        "h100@torch=2.11.0,transformers=5.23.0,accelerate=1.0.1,bitsandbytes=0.50.2",
        "int8",
        "unsupported",
        1,
        1,
        TF_ACC.format(v="5.23.0", floor='"1.1.0" (line 165)'),
        False,
        "1.1.0",
    ),
    VerdictCase(
        "l4@torch=3.0.0,transformers=5.23.0,accelerate=1.15.0,bitsandbytes=0.50.2",
        "nf4",
        "unsupported",
        1,
        1,
        BNB_META.format(v="0.50.2", floor="2.4") + " (a ceiling too: torch 3 is refused)",
        False,
        "<3",
    ),
)

# --- 2. bitsandbytes binaries -------------------------------------------------------------
BNB_BINARIES: tuple[VerdictCase, ...] = (
    VerdictCase(
        "t4@" + _s("torch=2.0.1", SEED_STACK, "bitsandbytes=0.35.4"),
        "int8",
        "supported",
        0,
        0,
        f"{BNB0354_CC}; {BNB0354_ELF}; HF 'Efficient Inference on a Single GPU' v4.29",
    ),
    VerdictCase(
        "p100@" + _s("torch=2.0.1", SEED_STACK, "bitsandbytes=0.35.4"),
        "int8",
        "unsupported",
        1,
        1,
        BNB0354_CC,
        False,
        "7.5",
    ),
    VerdictCase(
        "v100@" + _s("torch=2.0.1", SEED_STACK, "bitsandbytes=0.35.4"),
        "int8",
        "unsupported",
        1,
        1,
        BNB0354_CC,
        False,
        "7.5",
    ),
    VerdictCase(
        "h100@" + _s("torch=2.0.1", SEED_STACK, "bitsandbytes=0.35.4"),
        "int8",
        "unsupported",
        1,
        1,
        f"{BNB0354_CC}; {BNB0354_ELF} (no sm_90); bitsandbytes#538",
    ),
    VerdictCase(
        "l4@" + _s("torch=2.0.1+cu118", SEED_STACK, "bitsandbytes=0.35.4"),
        "int8",
        "unsupported",
        1,
        1,
        BNB0354_CC + " (8.9 is not in the list)",
    ),
    VerdictCase(
        "a100@torch=2.5.1,transformers=4.46.3,accelerate=1.1.1,bitsandbytes=0.43.0",
        "int8",
        "unsupported",
        1,
        1,
        f"{BNB_LIBS.format(v='0.43.0', libs='cuda117..cuda123')}; {BNB_CPU_FALLBACK}; "
        + TORCH251_CUDA,
        False,
        "12.4",
    ),
    VerdictCase(
        "a100@torch=2.5.1,transformers=4.46.3,accelerate=1.1.1,bitsandbytes=0.43.1",
        "int8",
        "supported",
        0,
        0,
        f"{BNB_LIBS.format(v='0.43.1', libs='cuda117..cuda124')}; {TORCH251_CUDA}",
    ),
    VerdictCase(
        "a100@torch=2.6.0+cu126,transformers=4.46.3,accelerate=1.1.1,bitsandbytes=0.44.1",
        "int8",
        "unsupported",
        1,
        1,
        f"{BNB_LIBS.format(v='0.44.1', libs='cuda117..cuda125')}; {BNB_CPU_FALLBACK}",
        False,
        "12.6",
    ),
    VerdictCase(
        "a100@torch=2.6.0+cu126,transformers=4.46.3,accelerate=1.1.1,bitsandbytes=0.45.0",
        "int8",
        "supported",
        0,
        0,
        BNB_LIBS.format(v="0.45.0", libs="cuda117..cuda126"),
    ),
    VerdictCase(
        "tesla-m40@" + _s("torch=2.7.1+cu126", HF456, "bitsandbytes=0.47.0"),
        "int8",
        "degraded",
        0,
        1,
        "cuobjdump of bitsandbytes 0.47.0 libbitsandbytes_cuda126.so: sm_50 ... sm_90; "
        "int8 below cc 7.5 is the slow fallback (bitsandbytes 0.37.0 changelog)",
    ),
    VerdictCase(
        "tesla-m40@" + _s("torch=2.7.1+cu126", HF456, "bitsandbytes=0.48.0"),
        "int8",
        "unsupported",
        1,
        1,
        "cuobjdump of bitsandbytes 0.48.0 libbitsandbytes_cuda126.so: sm_60 ... sm_90 "
        "(Maxwell dropped)",
        False,
        "Maxwell",
    ),
    VerdictCase(
        "v100@" + _s("torch=2.8.0+cu128", HF456, "bitsandbytes=0.46.0"),
        "int8",
        "unsupported",
        1,
        1,
        "cuobjdump of bitsandbytes 0.46.0 libbitsandbytes_cuda128.so: sm_75 ... sm_120 "
        "(no sm_70; 0.45.3 had it)",
        False,
        "sm_70",
    ),
    VerdictCase(
        "v100@" + _s("torch=2.8.0+cu128", HF456, "bitsandbytes=0.47.0"),
        "int8",
        "degraded",
        0,
        1,
        "cuobjdump of bitsandbytes 0.47.0 libbitsandbytes_cuda128.so: sm_70 ... sm_120 "
        "(bitsandbytes PR #1715); int8 below cc 7.5 is the slow fallback",
    ),
    VerdictCase(
        "rtx5090@" + _s("torch=2.7.0+cu128", HF456, "bitsandbytes=0.45.3"),
        "nf4",
        "supported",
        0,
        0,
        "cuobjdump of bitsandbytes 0.45.3 libbitsandbytes_cuda128.so: ... sm_100, sm_120",
    ),
    VerdictCase(
        "rtx5090@" + _s("torch=2.7.0+cu128", HF456, "bitsandbytes=0.45.2"),
        "nf4",
        "unsupported",
        1,
        1,
        f"{BNB_LIBS.format(v='0.45.2', libs='cuda117..cuda126')} (no cuda128)",
        False,
        "12.8",
    ),
)

# --- 3. the fastpath (optimum 2.0.0 pins "no BetterTransformer" where it is not the point) -
OLD_FA = "torch=2.1.0,transformers=4.35.2,accelerate=0.24.1,optimum=2.0.0"
FASTPATH: tuple[VerdictCase, ...] = (
    VerdictCase(
        "a100@torch=2.1.0,transformers=4.34.1,accelerate=0.23.0,optimum=2.0.0,flash_attn=2.3.3",
        "fastpath",
        "supported",
        0,
        0,
        TF434_FA + "; " + FA_AMPERE,
        False,
        "use_flash_attention_2",
    ),
    VerdictCase(
        f"a100@{OLD_FA},flash_attn=2.3.3",
        "fastpath",
        "supported",
        0,
        0,
        TF435_FA,
        False,
        "use_flash_attention_2",
    ),
    VerdictCase(
        f"a100@{OLD_FA},flash_attn=2.0.4",
        "fastpath",
        "unsupported",
        1,
        1,
        TF435_FA + "; no SDPA before 4.36, no BetterTransformer in optimum 2",
        False,
        "2.1.0",
    ),
    VerdictCase(
        f"t4@{OLD_FA},flash_attn=2.3.3",
        "fastpath",
        "unsupported",
        1,
        1,
        FA_AMPERE + "; no SDPA in transformers 4.35",
        False,
        "Ampere",
    ),
    VerdictCase(
        f"v100@{OLD_FA},flash_attn=2.3.3",
        "fastpath",
        "unsupported",
        1,
        1,
        FA_AMPERE + "; no SDPA in transformers 4.35",
        False,
        "Ampere",
    ),
    VerdictCase(
        "a100@torch=2.1.1,transformers=4.36.0,accelerate=0.25.0,optimum=2.0.0,flash_attn=2.0.4",
        "fastpath",
        "supported",
        0,
        0,
        TF436_FA + " (flash-attn 2.0.4 refused: SDPA instead)",
        False,
        "sdpa",
    ),
    VerdictCase(
        "rtx5090@" + _s("torch=2.7.0+cu128", HF456, "optimum=2.0.0", "flash_attn=2.8.3"),
        "fastpath",
        "supported",
        0,
        0,
        FA_SM120,
        False,
        "sdpa",
    ),
    VerdictCase(
        "a100@torch=2.1.0,transformers=4.35.2,accelerate=0.24.1,optimum=1.14.0",
        "fastpath",
        "supported",
        0,
        0,
        OPT114_BT,
        False,
        "BetterTransformer",
    ),
    VerdictCase(
        "a100@torch=2.1.0,transformers=4.49.0,accelerate=1.2.1,optimum=1.25.0",
        "fastpath",
        "unsupported",
        1,
        1,
        OPT125_BT,
        False,
        "4.49",
    ),
)

# --- 4. platform ------------------------------------------------------------------------
PLATFORM: tuple[VerdictCase, ...] = (
    VerdictCase(
        "jetson-orin@torch=2.5.1,transformers=4.46.3,accelerate=1.1.1",
        "fp16",
        "unsupported",
        1,
        1,
        JETSON,
        False,
        "tegra",
    ),
    VerdictCase(
        "jetson-orin@" + _s("torch=2.8.0+cu128", HF456),
        "fp32",
        "unsupported",
        1,
        1,
        JETSON_SBSA,
        False,
        "tegra",
    ),
    VerdictCase(
        "jetson-orin@torch=2.5.1,transformers=4.46.3,accelerate=1.1.1,bitsandbytes=0.46.1",
        "nf4",
        "unsupported",
        1,
        1,
        JETSON_BNB + "; " + JETSON,
        False,
        "tegra",
    ),
    VerdictCase(
        "gh200@torch=2.4.0,transformers=4.46.3,accelerate=1.1.1",
        "fp16",
        "unsupported",
        1,
        1,
        GH200_TORCH24,
        False,
        "aarch64",
    ),
    VerdictCase(
        "gh200@" + _s("torch=2.8.0+cu128", HF456),
        "fp16",
        "supported",
        0,
        0,
        GH200_TORCH28,
    ),
    VerdictCase(
        "gh200@" + _s("torch=2.8.0+cu128", HF456, "bitsandbytes=0.45.5"),
        "int8",
        "unsupported",
        1,
        1,
        BNB_AARCH64 + "; bitsandbytes#1437",
        False,
        "aarch64",
    ),
    VerdictCase(
        "gh200@" + _s("torch=2.8.0+cu128", HF456, "bitsandbytes=0.46.0"),
        "int8",
        "supported",
        0,
        0,
        f"{BNB_AARCH64}; {BNB046_AARCH64}",
    ),
    VerdictCase(
        "h100-x86@" + _s("torch=2.8.0+cu128", HF456, "bitsandbytes=0.45.5"),
        "int8",
        "supported",
        0,
        0,
        BNB_LIBS.format(v="0.45.5 manylinux_2_24_x86_64", libs="cuda128")
        + " (the control for the gh200 row: same stack, x86_64)",
    ),
)

# --- 5. closed world: versions newer than any table ---------------------------------------
CLOSED_WORLD: tuple[VerdictCase, ...] = (
    VerdictCase(
        "h100@torch=2.99.0,transformers=5.23.0,accelerate=1.15.0,bitsandbytes=0.50.2",
        "fp16",
        "degraded",
        0,
        1,
        CLOSED.format(what="torch 2.99.0 (its CUDA builds and architectures)"),
        UNSETTLED,
        "unconfirmed",
    ),
    VerdictCase(
        "a10@torch=2.99.0,transformers=5.23.0,accelerate=1.15.0,bitsandbytes=0.50.2",
        "bf16",
        "degraded",
        0,
        1,
        CLOSED.format(what="torch 2.99.0"),
        UNSETTLED,
        "unconfirmed",
    ),
    VerdictCase(
        "h100@torch=2.11.0,transformers=5.99.0,accelerate=1.15.0,bitsandbytes=0.50.2",
        "fp16",
        "degraded",
        0,
        1,
        CLOSED.format(what="transformers 5.99.0 (its torch floor)"),
        UNSETTLED,
        "unconfirmed",
    ),
    VerdictCase(
        "h100@torch=2.11.0,transformers=5.23.0,accelerate=1.15.0,bitsandbytes=0.99.0",
        "int8",
        "degraded",
        0,
        1,
        CLOSED.format(what="bitsandbytes 0.99.0 (its libraries and torch floor)"),
        UNSETTLED,
        "unconfirmed",
    ),
    VerdictCase(
        "t4@torch=2.11.0,transformers=5.23.0,accelerate=1.15.0,bitsandbytes=0.99.0",
        "nf4",
        "degraded",
        0,
        1,
        CLOSED.format(what="bitsandbytes 0.99.0"),
        UNSETTLED,
        "unconfirmed",
    ),
    VerdictCase(
        "h100@torch=2.11.0,transformers=5.23.0,accelerate=9.0.0,bitsandbytes=0.50.2",
        "int8",
        "degraded",
        0,
        1,
        CLOSED.format(what="accelerate 9.0.0"),
        UNSETTLED,
        "unconfirmed",
    ),
)

# --- 6. precision per architecture --------------------------------------------------------
PRECISION: tuple[VerdictCase, ...] = (
    VerdictCase(f"gtx1660@{CURRENT}", "bf16", "unsupported", 1, 1, BF16_POLICY, False, "8.0"),
    VerdictCase(f"v100@{CURRENT}", "bf16", "unsupported", 1, 1, BF16_POLICY, False, "8.0"),
    VerdictCase(f"p100@{CURRENT}", "bf16", "unsupported", 1, 1, BF16_POLICY, False, "8.0"),
    VerdictCase(f"p40@{CURRENT}", "bf16", "unsupported", 1, 1, BF16_POLICY, False, "8.0"),
    VerdictCase(f"l4@{CURRENT}", "bf16", "supported", 0, 0, BF16_NATIVE),
    VerdictCase(f"h100@{CURRENT}", "bf16", "supported", 0, 0, BF16_NATIVE),
    VerdictCase(f"rtx3090@{CURRENT}", "bf16", "supported", 0, 0, BF16_NATIVE),
    VerdictCase(f"gtx1080@{CURRENT}", "fp16", "degraded", 0, 1, FP16_RATE, False, "1/64"),
    VerdictCase(
        f"t4@{CURRENT}",
        "fp16",
        "supported",
        0,
        0,
        "Turing fp16 tensor cores (NVIDIA Turing whitepaper)",
    ),
)

GROUPS: tuple[tuple[str, tuple[VerdictCase, ...]], ...] = (
    ("Version floors between packages", FLOORS),
    ("bitsandbytes binaries", BNB_BINARIES),
    ("Fastpath", FASTPATH),
    ("Platform", PLATFORM),
    ("Closed world", CLOSED_WORLD),
    ("Precision per architecture", PRECISION),
)
CASES: tuple[VerdictCase, ...] = tuple(case for _, group in GROUPS for case in group)

DOC = Path(__file__).parents[1] / "docs" / "public-cases.md"


def _gpu(case: VerdictCase) -> str:
    name = case.profile.split("@")[0]
    return f"{name} (profile file)" if name in GPU_FILES else name


def _expected(case: VerdictCase) -> str:
    text = f"{case.status} (exit {case.exit_code}, strict {case.strict_exit_code})"
    return text + (", unconfirmed" if case.unsettled and case.status != "unknown" else "")


def render_markdown() -> str:
    """The doc page: one table per group, rendered from the data above."""
    lines = [
        "# Public verdict cases",
        "",
        "Rendered from `tests/test_public_cases.py` (do not edit by hand: run",
        "`PYTHONPATH=. python tests/test_public_cases.py`). Each row is a simulated GPU with",
        "pinned package versions, the mode judged, the verdict the public source supports,",
        "and that source. GPUs marked *(profile file)* have no built-in profile; the test",
        "writes their profile (listed at the end) to a file.",
        "",
    ]
    for title, group in GROUPS:
        lines += [f"## {title} ({len(group)})", ""]
        lines += ["| GPU | stack | mode | expected | key fact | source |", "|---|---|---|---|---|---|"]
        for case in group:
            stack = case.profile.partition("@")[2].replace(",", ", ")
            fact = f"`{case.reason_contains}`" if case.reason_contains else ""
            source = case.source.replace("|", "\\|")
            lines.append(
                f"| {_gpu(case)} | {stack} | {case.mode} | {_expected(case)} | {fact} | "
                f"{source} |"
            )
        lines.append("")
    lines += ["## Profile files", "", "| name | profile |", "|---|---|"]
    for name, data in GPU_FILES.items():
        lines.append(f"| {name} | `{json.dumps(data, sort_keys=True)}` |")
    return "\n".join(lines) + "\n"


def _profile_arg(case: VerdictCase, directory: Path) -> str:
    """A built-in profile string as it is, or a GPU_FILES entry written to a file."""
    name, _, overrides = case.profile.partition("@")
    if name not in GPU_FILES:
        return case.profile
    software = dict(item.split("=", 1) for item in overrides.split(",") if item)
    data = {"name": name, **GPU_FILES[name], "software": software}
    path = directory / f"{name}-{CASES.index(case)}.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def _id(case: VerdictCase) -> str:
    return f"{case.profile.split('@')[0]}-{case.mode}-{case.status}-{CASES.index(case)}"


def test_the_table_is_big_enough_new_and_sourced() -> None:
    from test_verdict_cases import CASES as EXISTING

    assert len(CASES) >= 40
    assert all(len(group) >= 5 for _, group in GROUPS)
    assert all(case.source for case in CASES)
    assert len({(c.profile, c.mode) for c in CASES}) == len(CASES)
    assert not {(c.profile, c.mode) for c in CASES} & {(c.profile, c.mode) for c in EXISTING}


def test_the_doc_page_is_current() -> None:
    assert DOC.read_text(encoding="utf-8") == render_markdown(), (
        "docs/public-cases.md is stale: run `PYTHONPATH=. python tests/test_public_cases.py`"
    )


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_public_case(
    case: VerdictCase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = _profile_arg(case, tmp_path)
    verdict = probe(profile, modes=[case.mode]).verdicts[case.mode]
    said = f"{verdict.status.value}: {verdict.reason}"
    assert verdict.status.value == case.status, said
    unconfirmed = any(f.message.startswith(UNCONFIRMED) for f in verdict.findings)
    if case.unsettled:
        assert case.status == "unknown" or unconfirmed, said
    else:
        assert not unconfirmed, said
    told = f"{verdict.reason} {verdict.resolves_to or ''}".lower()
    assert case.reason_contains.lower() in told, said
    argv = ["audit", "--profile", profile, "--modes", case.mode]
    capsys.readouterr()
    assert main([*argv, "--json"]) == case.exit_code
    report = json.loads(capsys.readouterr().out)
    assert report["verdicts"][case.mode]["status"] == case.status
    assert main([*argv, "--strict"]) == case.strict_exit_code
    capsys.readouterr()


if __name__ == "__main__":
    DOC.write_text(render_markdown(), encoding="utf-8")
    sys.stdout.write(f"wrote {DOC} ({len(CASES)} cases)\n")

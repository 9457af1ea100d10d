"""Compute capability -> architecture, tensor-core precisions and SDPA kernel eligibility.

Data only; the rules read it. Sources: NVIDIA's CUDA C Programming Guide (compute
capabilities), the architecture whitepapers, and PyTorch's ``sdp_utils`` checks.
"""

from __future__ import annotations

import re

# Compute capability (major, minor) ranges -> architecture name. Checked in order.
_ARCHITECTURES: tuple[tuple[tuple[int, int], tuple[int, int], str], ...] = (
    ((3, 0), (3, 9), "Kepler"),
    ((5, 0), (5, 9), "Maxwell"),
    ((6, 0), (6, 9), "Pascal"),
    ((7, 0), (7, 2), "Volta"),
    ((7, 3), (7, 9), "Turing"),
    ((8, 0), (8, 7), "Ampere"),
    ((8, 8), (8, 9), "Ada"),
    ((9, 0), (9, 9), "Hopper"),
    ((10, 0), (11, 9), "Blackwell"),
    ((12, 0), (12, 9), "Blackwell (consumer)"),
)

# Tensor-core precision -> first compute capability that has it in hardware.
TENSOR_CORE_PRECISIONS: dict[str, tuple[int, int]] = {
    "fp16": (7, 0),
    # int8 MMA as the CUDA libraries use it (cuBLASLt IMMA, hence bitsandbytes' LLM.int8)
    # begins with Turing; Volta 7.0 has fp16 only, Xavier's 7.2 int8 units are not a
    # cuBLASLt target. The rules read this one fact.
    "int8": (7, 5),
    "int4": (7, 5),
    "bf16": (8, 0),
    "tf32": (8, 0),
    "fp8": (8, 9),
    "fp6": (10, 0),
    "fp4": (10, 0),
}

# Turing boards sold without tensor cores: the GTX 16xx line (1630, 1650, 1660 ...).
_NO_TENSOR_CORE_NAME = re.compile(r"GTX\s*16\d\d", re.IGNORECASE)

# PyTorch scaled_dot_product_attention kernels -> minimum compute capability.
SDPA_BACKENDS: dict[str, tuple[int, int]] = {
    "flash": (8, 0),  # PLATFORM_SUPPORTS_FLASH_ATTENTION = SM80OrLater; fp16/bf16, head dim <= 256
    "cudnn": (8, 0),  # cuDNN attention, cuDNN >= 9
    "memory-efficient": (5, 0),
    "math": (0, 0),
}


def architecture_name(compute_capability: tuple[int, int]) -> str:
    for low, high, name in _ARCHITECTURES:
        if low <= compute_capability <= high:
            return name
    if compute_capability > _ARCHITECTURES[-1][1]:
        return "newer than Blackwell"
    return "pre-Kepler"


def has_tensor_cores(compute_capability: tuple[int, int], gpu_name: str | None = None) -> bool:
    if gpu_name and _NO_TENSOR_CORE_NAME.search(gpu_name):
        return False
    return compute_capability >= TENSOR_CORE_PRECISIONS["fp16"]


def tensor_core_precisions(
    compute_capability: tuple[int, int], gpu_name: str | None = None
) -> tuple[str, ...]:
    if not has_tensor_cores(compute_capability, gpu_name):
        return ()
    return tuple(p for p, first in TENSOR_CORE_PRECISIONS.items() if compute_capability >= first)


def sdpa_backends(compute_capability: tuple[int, int]) -> tuple[str, ...]:
    return tuple(b for b, first in SDPA_BACKENDS.items() if compute_capability >= first)


def parse_compute_capability(text: str) -> tuple[int, int]:
    """Parse "8.6" or "9" into (major, minor); ValueError names the bad value."""
    match = re.fullmatch(r"\s*(\d+)(?:\.(\d+))?\s*", text)
    if not match:
        raise ValueError(f"compute capability {text!r} is not of the form MAJOR.MINOR (e.g. 8.6)")
    return int(match.group(1)), int(match.group(2) or 0)

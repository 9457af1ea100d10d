"""Built-in profiles for current parts (Blackwell, Ada, Grace Hopper, Jetson), each sourced.

Figures as NVIDIA states them; memory is NVML's total where a public report of it exists,
else the datasheet's capacity (NVML reports a little less). A figure no source gave is
left out: the part is not listed rather than invented.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuSpec:
    name: str
    gpu_name: str
    compute_capability: str
    memory_mib: int
    memory_bandwidth_gb_per_s: float
    source: str
    platform: str = "x86_64"
    gpu_count: int = 1


_CC = "CUDA GPU compute capability table (developer.nvidia.com/cuda-gpus)"

CURRENT_SPECS: tuple[GpuSpec, ...] = (
    GpuSpec(
        "rtx5090",
        "NVIDIA GeForce RTX 5090",
        "12.0",
        32607,
        1792,
        "GeForce RTX 5090 spec page (32 GB GDDR7, 512-bit, 1792 GB/s); memory: NVML total as "
        f"reported in flash-attention#1638; {_CC}",
    ),
    GpuSpec(
        "rtx5080",
        "NVIDIA GeForce RTX 5080",
        "12.0",
        16384,
        960,
        "GeForce RTX 5080 spec page (16 GB GDDR7, 256-bit, 30 Gbps: 960 GB/s); memory: the "
        f"datasheet's 16 GB; {_CC}",
    ),
    GpuSpec(
        "l40s",
        "NVIDIA L40S",
        "8.9",
        49152,
        864,
        f"NVIDIA L40S datasheet (48 GB GDDR6 with ECC, 864 GB/s); memory: the datasheet's; {_CC}",
    ),
    GpuSpec(
        "gh200",
        "NVIDIA GH200 480GB",
        "9.0",
        97871,
        4000,
        "NVIDIA GH200 Grace Hopper Superchip datasheet (96 GB HBM3, 4 TB/s; Grace CPU: "
        f"aarch64); memory: NVML total of the 96 GB part; {_CC}",
        platform="aarch64",
    ),
    GpuSpec(
        "b300",
        "NVIDIA B300",
        "10.3",
        294912,
        8000,
        "NVIDIA HGX B300 / Blackwell Ultra spec page (288 GB HBM3e, 8 TB/s per GPU); sm_103 "
        "in pytorch#161257 (GB300); memory: the datasheet's",
    ),
    GpuSpec(
        "jetson-agx-orin",
        "Orin",
        "8.7",
        61440,
        204.8,
        "Jetson AGX Orin 64GB datasheet (64 GB LPDDR5 shared with the CPU, 204.8 GB/s); "
        "cc 8.7 and the 'Orin' device name as JetPack reports them; memory: what "
        f"the GPU may allocate of the shared 64 GB (public reports); {_CC}",
        platform="tegra",
    ),
)

CURRENT_ALIASES: dict[str, str] = {
    "rtx-5090": "rtx5090",
    "rtx-5080": "rtx5080",
    "jetson-orin": "jetson-agx-orin",
    "agx-orin": "jetson-agx-orin",
}

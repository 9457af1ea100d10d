"""Ready machines for the fake NVML (see ``pynvml.py`` here for the spec format).

Each helper returns a fresh dict, so a test may edit its copy. Use them with the
``fake_nvml`` fixture: ``fake_nvml(nvml_specs.h100())``; ``NO_DRIVER`` (None) is a
machine without an NVIDIA driver.
"""

from __future__ import annotations

from typing import Any

GiB = 2**30

NO_DRIVER: None = None
"""No GPUINFER_FAKE_NVML at all: nvmlInit raises NVMLError_LibraryNotFound."""

H100_UUID = "GPU-1a08a098-833c-7589-a433-4ee163ceb2ba"


def gpu(
    name: str,
    compute_capability: tuple[int, int],
    total_gib: float,
    *,
    index: int = 0,
    free_gib: float | None = None,
    uuid: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One GPU entry; free defaults to all but 0.5 GiB reserved by the driver."""
    total = int(total_gib * GiB)
    reserved = int(0.5 * GiB)
    free = total - reserved if free_gib is None else int(free_gib * GiB)
    entry: dict[str, Any] = {
        "name": name,
        "cc": list(compute_capability),
        "total": total,
        "reserved": reserved,
        "free": free,
        "uuid": uuid or f"GPU-{index:08x}-{index:04x}-4000-8000-{index:012x}",
        "pci": f"00000000:{index + 1:02X}:00.0",
        "mig": False,
    }
    entry.update(extra)
    return entry


def machine(
    *gpus: dict[str, Any], driver: str = "580.65.06", cuda_driver: int = 13000
) -> dict[str, Any]:
    return {
        "driver": driver,
        "cuda_driver": cuda_driver,
        "nvml_version": f"{cuda_driver // 1000}.{driver}",
        "gpus": list(gpus),
    }


def h100() -> dict[str, Any]:
    """One H100 80GB (Hopper, 9.0)."""
    return machine(gpu("NVIDIA H100 80GB HBM3", (9, 0), 79.6, uuid=H100_UUID))


def t4() -> dict[str, Any]:
    """One Tesla T4 (Turing, 7.5), driver 535 / CUDA 12.2."""
    return machine(gpu("Tesla T4", (7, 5), 15.0), driver="535.183.01", cuda_driver=12020)


def a100_x4() -> dict[str, Any]:
    """Four A100-SXM4-40GB (Ampere, 8.0)."""
    return machine(*(gpu("NVIDIA A100-SXM4-40GB", (8, 0), 40.0, index=i) for i in range(4)))


def v100_a100() -> dict[str, Any]:
    """A mixed box: a V100 (7.0) at PCI index 0, an A100 (8.0) at PCI index 1."""
    return machine(
        gpu("Tesla V100-SXM2-16GB", (7, 0), 16.0, index=0),
        gpu("NVIDIA A100-SXM4-80GB", (8, 0), 80.0, index=1),
    )


def gtx1660() -> dict[str, Any]:
    """A Turing (7.5) board sold without tensor cores."""
    return machine(gpu("NVIDIA GeForce GTX 1660 SUPER", (7, 5), 6.0))


def driver_not_loaded() -> dict[str, Any]:
    """NVML library present, kernel module not loaded."""
    return {"fail": {"init": "DriverNotLoaded"}}


def h100_x2() -> dict[str, Any]:
    """Two H100 80GB (the issue-12 machine)."""
    return machine(*(gpu("NVIDIA H100 80GB HBM3", (9, 0), 79.6, index=i) for i in range(2)))


def h100_x8() -> dict[str, Any]:
    """Eight H100 80GB (an HGX box)."""
    return machine(*(gpu("NVIDIA H100 80GB HBM3", (9, 0), 79.6, index=i) for i in range(8)))

"""Hardware and software probes for pytest-gpuinfer.

Importing this package is cheap: no torch, transformers, bitsandbytes or NVML is
imported until a probe runs, and NVML is the only thing a default probe loads.
"""

from __future__ import annotations

from pytest_gpuinfer.probes.probe import probe
from pytest_gpuinfer.probes.report import (
    MODES,
    SCHEMA_VERSION,
    DriverInfo,
    Finding,
    GPUInfo,
    NativeCheck,
    Report,
    SoftwareStack,
    Status,
    Verdict,
    parse_modes,
)

__all__ = [
    "MODES",
    "SCHEMA_VERSION",
    "DriverInfo",
    "Finding",
    "GPUInfo",
    "NativeCheck",
    "Report",
    "SoftwareStack",
    "Status",
    "Verdict",
    "parse_modes",
    "probe",
]

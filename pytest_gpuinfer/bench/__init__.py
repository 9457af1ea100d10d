"""Measure what each inference mode costs: ``gpuinfer bench`` and the ``gpuinfer_bench`` fixture.

Nothing heavy is imported here; torch is imported by the measuring process only.
"""

from __future__ import annotations

from pytest_gpuinfer.bench.config import BenchConfig, Repetitions
from pytest_gpuinfer.bench.record import FIGURES, SCHEMA, SCHEMA_VERSION, ModeResult
from pytest_gpuinfer.probes.memory_workload import Workload

__all__ = [
    "FIGURES",
    "SCHEMA",
    "SCHEMA_VERSION",
    "BenchConfig",
    "ModeResult",
    "Repetitions",
    "Workload",
]

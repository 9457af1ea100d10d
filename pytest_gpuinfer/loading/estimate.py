"""The memory one load needs, estimated once per (source, mode, workload) from the config."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_gpuinfer.probes.errors import InputError

if TYPE_CHECKING:
    from pytest_gpuinfer.probes.memory_workload import Workload, WorkloadEstimate
    from pytest_gpuinfer.probes.sources import ModelSource


@dataclass(frozen=True)
class LoadEstimate:
    """The audit's estimate for one load: the weights, and the workload's peak when declared."""

    weights_bytes: int | None
    workload: WorkloadEstimate | None = None
    error: str | None = None
    """Why there is no figure (a hub id not cached here, a config without layer sizes)."""

    @property
    def needed_bytes(self) -> int | None:
        """What the load needs on the GPU: the workload's peak, else the weights."""
        return self.workload.peak_bytes if self.workload is not None else self.weights_bytes

    def raise_error(self) -> None:
        """Raise the estimate's InputError (the caller declared a workload and needs it)."""
        if self.error is not None:
            raise InputError(self.error)


@functools.lru_cache(maxsize=64)
def estimate_load(source: ModelSource, mode: str, workload: Workload | None) -> LoadEstimate:
    """The one estimate of a load: the cache, the OOM message and the workload check read
    it, so a load computes it once. It never raises: a load must not fail on an estimate."""
    from pytest_gpuinfer.probes.memory_fit import estimate_model_memory
    from pytest_gpuinfer.probes.memory_workload import estimate_workload

    try:
        estimate = estimate_model_memory(source.name, (mode,))
        peak = estimate_workload(estimate, mode, workload) if workload is not None else None
    except InputError as error:
        return LoadEstimate(None, error=str(error))
    return LoadEstimate(estimate.weights_bytes(mode), peak)


def estimate_load_bytes(name_or_path: str | os.PathLike[str], mode: str) -> int | None:
    """Bytes a load of ``name_or_path`` in ``mode`` needs for its weights (the audit's
    estimate from the config); None where the config cannot be read here (a hub id not
    cached locally)."""
    from pytest_gpuinfer.probes.modes import parse_mode
    from pytest_gpuinfer.probes.sources import resolve_source

    return estimate_load(resolve_source(name_or_path), parse_mode(mode).name, None).weights_bytes

"""The loading API in one documented place: load a model in a mode, cache it, free its memory.

The work is done by :mod:`pytest_gpuinfer.loading.request` (the arguments),
:mod:`pytest_gpuinfer.loading.plan` (what to ask transformers for),
:mod:`pytest_gpuinfer.loading.loader` (the load itself),
:mod:`pytest_gpuinfer.loading.gpu_memory` and :mod:`pytest_gpuinfer.loading.model_cache`.
Importing it imports no torch or transformers.
"""

from __future__ import annotations

from pytest_gpuinfer.loading.estimate import estimate_load_bytes
from pytest_gpuinfer.loading.gpu_memory import memory_in_use, release_memory
from pytest_gpuinfer.loading.loader import LoadedModel, load_model, load_request, save_model
from pytest_gpuinfer.loading.model_cache import ModelCache
from pytest_gpuinfer.loading.request import (
    DEFAULT_DEVICE_MAP,
    INT8_OPTIONS,
    NF4_OPTIONS,
    CacheKey,
    LoadRequest,
    check_mode,
)
from pytest_gpuinfer.probes.errors import (
    ModelLoadOOM,
    ModeUnavailable,
    RequirementUnmet,
    WorkloadDoesNotFit,
)
from pytest_gpuinfer.probes.modes import MODES
from pytest_gpuinfer.probes.sources import TASKS, check_task, infer_task, infer_task_from_config

__all__ = [
    "DEFAULT_DEVICE_MAP",
    "INT8_OPTIONS",
    "MODES",
    "NF4_OPTIONS",
    "TASKS",
    "CacheKey",
    "LoadRequest",
    "LoadedModel",
    "ModeUnavailable",
    "ModelCache",
    "ModelLoadOOM",
    "RequirementUnmet",
    "WorkloadDoesNotFit",
    "check_mode",
    "check_task",
    "estimate_load_bytes",
    "infer_task",
    "infer_task_from_config",
    "load_model",
    "load_request",
    "memory_in_use",
    "release_memory",
    "save_model",
]

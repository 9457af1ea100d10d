"""pytest-gpuinfer: gate, load and check Hugging Face models by what this GPU can run.

The public API, importable from here (each name also lives in its documented module):

- probing: :func:`probe` -> :class:`Report` (``pytest_gpuinfer.probes``);
- loading: :func:`load_model`, :class:`ModelCache`, :class:`LoadedModel`
  (``pytest_gpuinfer.loading``);
- assertions: ``assert_*`` (``pytest_gpuinfer.assertions``; they import torch);
- errors: :class:`GpuinferError` and under it :class:`InputError`,
  :class:`RequirementUnmet`, :class:`ModeUnavailable`, :class:`ModelLoadOOM`.

Importing this package imports nothing else (not even the probes): names are resolved
on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_gpuinfer.loading import LoadedModel, ModelCache, load_model
    from pytest_gpuinfer.probes import Report, probe
    from pytest_gpuinfer.probes.errors import (
        GpuinferError,
        InputError,
        ModelLoadOOM,
        ModeUnavailable,
        RequirementUnmet,
    )
    from pytest_gpuinfer.probes.modes import MODE_INFO, MODES

__version__ = "0.2.0"

_LAZY = {
    "GpuinferError": "pytest_gpuinfer.probes.errors",
    "InputError": "pytest_gpuinfer.probes.errors",
    "RequirementUnmet": "pytest_gpuinfer.probes.errors",
    "ModeUnavailable": "pytest_gpuinfer.probes.errors",
    "ModelLoadOOM": "pytest_gpuinfer.probes.errors",
    "probe": "pytest_gpuinfer.probes",
    "Report": "pytest_gpuinfer.probes",
    "MODES": "pytest_gpuinfer.probes.modes",
    "MODE_INFO": "pytest_gpuinfer.probes.modes",
    "load_model": "pytest_gpuinfer.loading",
    "LoadedModel": "pytest_gpuinfer.loading",
    "ModelCache": "pytest_gpuinfer.loading",
    "assert_on_device": "pytest_gpuinfer.assertions",
    "assert_device_map": "pytest_gpuinfer.assertions",
    "assert_quantized": "pytest_gpuinfer.assertions",
    "assert_memory_footprint": "pytest_gpuinfer.assertions",
    "assert_generation_close": "pytest_gpuinfer.assertions",
    "assert_logits_close": "pytest_gpuinfer.assertions",
    "assert_embeddings_close": "pytest_gpuinfer.assertions",
}

__all__ = [
    "MODES",
    "MODE_INFO",
    "GpuinferError",
    "InputError",
    "LoadedModel",
    "ModeUnavailable",
    "ModelCache",
    "ModelLoadOOM",
    "Report",
    "RequirementUnmet",
    "__version__",
    "assert_device_map",
    "assert_embeddings_close",
    "assert_generation_close",
    "assert_logits_close",
    "assert_memory_footprint",
    "assert_on_device",
    "assert_quantized",
    "load_model",
    "probe",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_gpuinfer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

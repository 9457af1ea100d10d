"""Assertions for tests of Hugging Face models: placement, quantization and correctness.

Every function raises ``AssertionError`` with a readable message when the check fails and
returns what it measured when it passes. ``reference`` / ``candidate`` arguments accept a
model, a ``(model, tokenizer)`` pair, or any object with ``.model`` and ``.tokenizer``
(such as ``pytest_gpuinfer.loading.LoadedModel``). The reference comes first, then the
candidate: the opposite of ``torch.testing.assert_close(actual, expected)``. Tolerances and
options are keyword-only. Bad arguments (a wrong type, a value out of range, a tolerance
passed by position) raise ``pytest_gpuinfer.probes.errors.InputError``.

torch, transformers and bitsandbytes are imported inside the functions that need them.
"""

from __future__ import annotations

from pytest_gpuinfer.assertions.embeddings import assert_embeddings_close
from pytest_gpuinfer.assertions.generation import GenerationComparison, assert_generation_close
from pytest_gpuinfer.assertions.logits import (
    DEFAULT_TOLERANCES,
    LogitsComparison,
    LogitsTolerance,
    assert_logits_close,
)
from pytest_gpuinfer.assertions.placement import assert_device_map, assert_on_device
from pytest_gpuinfer.assertions.quantization import assert_memory_footprint, assert_quantized

__all__ = [
    "DEFAULT_TOLERANCES",
    "GenerationComparison",
    "LogitsComparison",
    "LogitsTolerance",
    "assert_device_map",
    "assert_embeddings_close",
    "assert_generation_close",
    "assert_logits_close",
    "assert_memory_footprint",
    "assert_on_device",
    "assert_quantized",
]

"""LLM.int8 and nf4: really quantized, and smaller, as the seed document promises.

These tests name their mode rather than take ``inference_mode``: one instance each.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_gpuinfer.assertions import assert_memory_footprint, assert_quantized


@pytest.mark.gpuinfer(modes=["int8"])
def test_every_eligible_linear_is_int8(load_model: Any, model_path: str) -> None:
    lm = load_model(model_path, "int8")
    assert_quantized(lm)  # lm_head and other skipped modules stay in full precision


@pytest.mark.gpuinfer(modes=["int8"])
def test_int8_shrinks_the_fp16_footprint(load_model: Any, model_path: str) -> None:
    fp16 = load_model(model_path, "fp16")
    int8 = load_model(model_path, "int8")
    # Only nn.Linear halves: embeddings, lm_head and norms stay 16-bit (real models: 1.5-1.9).
    assert_memory_footprint(fp16, int8, min_ratio=1.2)


@pytest.mark.gpuinfer(modes=["nf4"])
def test_every_eligible_linear_is_4bit(load_model: Any, model_path: str) -> None:
    assert_quantized(load_model(model_path, "nf4"), bits=4)

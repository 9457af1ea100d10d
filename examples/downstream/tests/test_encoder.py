"""Sentence embeddings of an encoder agree across modes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_gpuinfer.assertions import assert_embeddings_close

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Pack my box with five dozen jugs."]


@pytest.mark.gpuinfer(modes=["fp16", "fastpath", "int8"])
def test_embeddings_match_fp32(inference_mode: str, load_model: Any, encoder_path: Path) -> None:
    reference = load_model(encoder_path, "fp32", task="encoder", attn_implementation="eager")
    candidate = load_model(encoder_path, task="encoder")
    assert_embeddings_close(reference, candidate, TEXTS, min_cosine=0.999)

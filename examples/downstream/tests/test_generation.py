"""Does every mode give the reference's answers? One test body, run once per mode."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_gpuinfer.assertions import (
    assert_generation_close,
    assert_logits_close,
    assert_on_device,
)
from pytest_gpuinfer.tiny_models import TRAINED_CONTINUATION, TRAINED_PROMPT

PROMPTS = [TRAINED_PROMPT, "A small model", "Hello, world!"]


# No `modes=` on the mark: `inference_mode` runs every mode (or --gpuinfer-modes), and
# each instance skips where this machine cannot run that mode.
@pytest.mark.gpuinfer
def test_generation_matches_reference(inference_mode: str, load_model: Any, reference: Any) -> None:
    candidate = load_model(reference.name_or_path)  # mode = inference_mode
    inputs = candidate.tokenizer(TRAINED_PROMPT, return_tensors="pt").to(candidate.model.device)
    assert_on_device(candidate, inputs)
    # Greedy on both; a divergence is allowed only between near-ties (top-5).
    assert_generation_close(reference, candidate, PROMPTS, max_new_tokens=24)


@pytest.mark.gpuinfer
def test_logits_within_mode_tolerance(inference_mode: str, load_model: Any, reference: Any) -> None:
    candidate = load_model(reference.name_or_path)
    # Tolerances default to the candidate's mode (DEFAULT_TOLERANCES[inference_mode]).
    result = assert_logits_close(reference, candidate, PROMPTS)
    assert result.mode == inference_mode


@pytest.mark.gpuinfer(modes=["fp32", "bf16", "fastpath"])
def test_memorized_continuation(inference_mode: str, load_model: Any, model_path: str) -> None:
    """Exact text only where the numerics are close enough for this model to repeat it."""
    lm = load_model(model_path)
    inputs = lm.tokenizer(TRAINED_PROMPT, return_tensors="pt").to(lm.model.device)
    output = lm.model.generate(**inputs, max_new_tokens=40, do_sample=False)
    text = lm.tokenizer.decode(output[0, inputs["input_ids"].shape[-1] :])
    assert text == TRAINED_CONTINUATION[: len(text)]

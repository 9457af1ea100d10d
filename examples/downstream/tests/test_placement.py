"""Where the weights and the inputs sit."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_gpuinfer.assertions import assert_device_map, assert_on_device


@pytest.mark.gpuinfer(modes=["fp16", "int8"])
def test_weights_where_the_loader_says(
    inference_mode: str, load_model: Any, model_path: str
) -> None:
    lm = load_model(model_path)
    # hf_device_map when transformers set one; otherwise everything on the one device.
    assert_device_map(lm, lm.device_map or lm.devices[0])
    inputs = lm.tokenizer("Hello", return_tensors="pt").to(lm.model.device)
    assert_on_device(lm, inputs)


@pytest.mark.gpuinfer(modes=["fp16"], gpus=2)
def test_split_over_two_gpus(load_model: Any, model_path: str) -> None:
    # A small budget on GPU 0 forces accelerate to put the rest on GPU 1. Not too small:
    # accelerate keeps room for the largest layer, and below about 600 KiB this model
    # lands on GPU 1 whole (seen on 2 x H100). 1200 KiB holds the embeddings and layer 0.
    lm = load_model(model_path, "fp16", max_memory={0: "1200KiB", 1: "1GiB"})
    assert lm.device_map is not None
    assert {"cuda:0", "cuda:1"} <= set(lm.devices)
    assert_device_map(lm, lm.device_map)
    inputs = lm.tokenizer("Hello", return_tensors="pt").to(lm.model.device)
    assert_on_device(lm, inputs)  # the first shard's device


@pytest.mark.gpuinfer(modes=["fp16"], compute_capability=">=8.0", total_memory="16GB")
def test_needs_an_ampere_class_card(load_model: Any, model_path: str) -> None:
    """Per-GPU requirements: on a CPU-only machine this skips ("found no GPU")."""
    lm = load_model(model_path, "fp16")
    assert lm.devices[0].startswith("cuda")

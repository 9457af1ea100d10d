"""MoE terms, the unmodelled margin, class facts read from transformers, a mode added later."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from pytest_gpuinfer.probes import memory_class_facts, modes
from pytest_gpuinfer.probes.memory_moe import moe_bytes
from pytest_gpuinfer.probes.memory_weights import estimate_model_memory
from pytest_gpuinfer.probes.memory_workload import UNMODELLED_MARGIN, Workload, estimate_workload
from pytest_gpuinfer.probes.model_shape import model_shape

MIXTRAL: dict[str, Any] = {
    "model_type": "mixtral", "hidden_size": 256, "intermediate_size": 896,
    "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 4,
    "num_local_experts": 8, "num_experts_per_tok": 2, "vocab_size": 1000,
}  # fmt: skip


def _config(tmp_path: Path, values: dict[str, Any], name: str = "m") -> Path:
    directory = tmp_path / name
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(values))
    return directory


def test_moe_terms_scale_with_top_k_and_experts() -> None:
    shape = model_shape(MIXTRAL, "mixtral")
    assert (shape.experts, shape.experts_per_token, shape.sparse_layers) == (8, 2, 4)
    tokens = 4096
    base = moe_bytes(shape, tokens, 2)
    # The routed rows (tokens x top-k) dominate: twice the top-k, about twice the bytes.
    top4 = moe_bytes(dataclasses.replace(shape, experts_per_token=4), tokens, 2)
    assert 1.9 < top4 / base < 2.05
    # More experts only widen the router's logits (tokens x E).
    wide = moe_bytes(dataclasses.replace(shape, experts=64), tokens, 2)
    assert wide - base == tokens * (64 - 8) * (2 + 4)
    # A shared expert's output stays alive beside the routed ones.
    shared = moe_bytes(dataclasses.replace(shape, shared_intermediate=512), tokens, 2)
    assert shared == max(3 * tokens * 512 * 2, tokens * 256 * 2 + base)


def test_moe_prefill_counts_the_routed_experts(tmp_path: Path) -> None:
    estimate = estimate_model_memory(_config(tmp_path, MIXTRAL), ("fp16",))
    assert estimate.read_from == "config" and estimate.shape is not None
    work = Workload(8, 1024, 0)
    moe = estimate_workload(estimate, "fp16", work)
    dense_shape = dataclasses.replace(estimate.shape, experts=0, sparse_layers=0)
    dense = estimate_workload(dataclasses.replace(estimate, shape=dense_shape), "fp16", work)
    assert moe.activations > dense.activations
    assert moe.confirmed and moe.margin == 0


def test_moe_experts_stay_sixteen_bit_in_int8(tmp_path: Path) -> None:
    estimate = estimate_model_memory(_config(tmp_path, MIXTRAL), ("fp16", "int8"))
    # transformers 5 keeps experts as 3-D parameters, which bitsandbytes does not convert:
    # only the attention projections are quantized.
    attention = 4 * (256 * 256 * 2 + 2 * 128 * 256)
    assert estimate.quantizable_linear_parameters == attention


def test_unmodelled_type_gets_the_margin_and_is_unconfirmed(tmp_path: Path) -> None:
    import transformers

    config = transformers.GPTNeoXConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        vocab_size=100,
    )  # fmt: skip
    auto: Any = transformers.AutoModelForCausalLM
    auto.from_config(config).save_pretrained(tmp_path / "neox")
    estimate = estimate_model_memory(tmp_path / "neox", ("fp16",))
    predicted = estimate_workload(estimate, "fp16", Workload(2, 256, 8))
    assert not predicted.confirmed
    workload_part = predicted.peak_reserved_bytes - predicted.weights - predicted.margin
    assert predicted.margin == pytest.approx(UNMODELLED_MARGIN * workload_part, abs=2)
    assert predicted.to_dict()["verdict"] == "unconfirmed"
    assert "gpu_memory_validation.py --model" in predicted.to_dict()["measure_with"]
    assert "--workload 2x256+8" in predicted.measure_with
    assert "unconfirmed" in predicted.summary()
    assert any("margin" in note for note in predicted.notes)


def test_gemma2_default_attention_is_the_installed_one() -> None:
    facts = memory_class_facts.class_facts("gemma2")
    if isinstance(facts.attention, memory_class_facts.Unknown):
        pytest.skip(f"gemma2's attention cannot be read here: {facts.attention}")
    import transformers

    sdpa = bool(transformers.Gemma2PreTrainedModel._supports_sdpa)
    values = {"model_type": "gemma2", "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "head_dim": 16, "vocab_size": 100}  # fmt: skip
    shape = model_shape(values, "gemma2")
    assert shape.attention == ("sdpa" if sdpa else "eager")
    assert shape.attention_source.startswith(str(Path(transformers.__file__).parent))
    assert shape.tie_word_embeddings == transformers.Gemma2Config().tie_word_embeddings


def test_without_transformers_facts_are_unknown_and_err_high(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    memory_class_facts.class_facts.cache_clear()
    try:
        facts = memory_class_facts.class_facts("llama")
        assert str(facts.attention) == "unknown, because transformers is not installed"
        values = {**MIXTRAL, "model_type": "llama"}
        shape = model_shape(values, "llama")
        # Eager holds the S x S scores, untied counts lm_head: the estimate errs high.
        assert shape.attention == "eager" and not shape.tie_word_embeddings
        assert shape.attention_source.startswith("unknown, because")
    finally:
        memory_class_facts.class_facts.cache_clear()


def test_a_new_mode_is_estimated_from_its_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = modes.Mode("int3", "a 3-bit mode", None, "float32", bits=3, dtype_fixed=False)
    monkeypatch.setattr(modes, "MODE_INFO", MappingProxyType({**modes.MODE_INFO, "int3": fake}))
    values = {**MIXTRAL, "model_type": "llama"}
    estimate = estimate_model_memory(_config(tmp_path, values), ("fp16", "int3", "int8"))
    assert estimate.weights_bytes("int3") < estimate.weights_bytes("int8")
    assert "3-bit" in estimate.modes["int3"].note
    predicted = estimate_workload(estimate, "int3", Workload(1, 128, 8))
    assert predicted.peak_reserved_bytes > estimate.weights_bytes("int3")

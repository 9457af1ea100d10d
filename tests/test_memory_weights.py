"""The weights estimate read from safetensors headers agrees with the meta-device build."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_gpuinfer.probes.errors import InputError
from pytest_gpuinfer.probes.memory_weights import estimate_model_memory
from pytest_gpuinfer.probes.model_shape import ARCHITECTURES
from pytest_gpuinfer.probes.safetensors_header import read_header

SMALL: dict[str, dict[str, Any]] = {
    "llama": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2},
    "mistral": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "sliding_window": 16},
    "qwen2": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2},
    "phi3": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "pad_token_id": 0},
    "gemma2": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
               "sliding_window": 8},
    "gpt2": {"n_embd": 64, "n_layer": 2, "n_head": 4, "bos_token_id": 0, "eos_token_id": 0},
    "opt": {"hidden_size": 64, "ffn_dim": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "word_embed_proj_dim": 64},
    "bloom": {"hidden_size": 64, "n_layer": 2, "n_head": 4},
    "t5": {"d_model": 64, "d_kv": 16, "d_ff": 128, "num_layers": 2, "num_decoder_layers": 3,
           "num_heads": 4},
    "mixtral": {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "num_local_experts": 4,
                "num_experts_per_tok": 2},
    "qwen2_moe": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                  "num_attention_heads": 4, "num_key_value_heads": 2, "num_experts": 4,
                  "num_experts_per_tok": 2, "moe_intermediate_size": 32,
                  "shared_expert_intermediate_size": 48},
    "qwen3_moe": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
                  "num_attention_heads": 4, "num_key_value_heads": 2, "num_experts": 4,
                  "num_experts_per_tok": 2, "moe_intermediate_size": 32, "head_dim": 16,
                  "mlp_only_layers": [1]},
}  # fmt: skip


def write_random_model(directory: Path, model_type: str, **overrides: Any) -> Path:
    """A small random model of ``model_type`` saved as users save theirs."""
    import torch
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    config = CONFIG_MAPPING[model_type](**{"vocab_size": 100, **SMALL[model_type], **overrides})
    auto: Any = (
        transformers.AutoModelForSeq2SeqLM
        if config.is_encoder_decoder
        else transformers.AutoModelForCausalLM
    )
    torch.manual_seed(0)
    auto.from_config(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {name: write_random_model(root / name, name) for name in SMALL}


def test_table_covers_every_modelled_architecture() -> None:
    assert set(SMALL) == set(ARCHITECTURES)


@pytest.mark.parametrize("model_type", sorted(SMALL))
def test_headers_agree_with_the_meta_device(models: dict[str, Path], model_type: str) -> None:
    fast = estimate_model_memory(models[model_type])
    slow = estimate_model_memory(models[model_type], meta_device=True)
    assert (fast.read_from, slow.read_from) == ("safetensors-header", "meta-device")
    assert fast.parameter_count == slow.parameter_count
    assert fast.quantizable_linear_parameters == slow.quantizable_linear_parameters
    assert fast.embedding_parameters == slow.embedding_parameters
    for mode in fast.modes:
        assert fast.weights_bytes(mode) == slow.weights_bytes(mode), mode
    assert fast.shape == slow.shape


@pytest.mark.parametrize("model_type", sorted(SMALL))
def test_config_alone_agrees_with_the_meta_device(
    models: dict[str, Path], model_type: str, tmp_path: Path
) -> None:
    saved = json.loads((models[model_type] / "config.json").read_text())
    # As save_pretrained writes it, and as a person writes it (sizes only).
    minimal = {"model_type": model_type, "vocab_size": 100, **SMALL[model_type]}
    if model_type in ("gemma2", "gpt2", "opt", "bloom", "t5"):
        minimal = {**minimal, "tie_word_embeddings": saved.get("tie_word_embeddings", True)}
    for name, config in (("saved", saved), ("minimal", minimal)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(config))
        fast = estimate_model_memory(tmp_path / name)
        slow = estimate_model_memory(tmp_path / name, meta_device=True)
        assert fast.read_from == "config", name
        assert fast.parameter_count == slow.parameter_count, name
        for mode in fast.modes:
            assert fast.weights_bytes(mode) == slow.weights_bytes(mode), (name, mode)


def test_config_without_every_size_is_built_by_transformers(tmp_path: Path) -> None:
    # Mistral's class default has 8 KV heads: without the key only transformers knows.
    config = {"model_type": "mistral", "vocab_size": 100, **SMALL["mistral"]}
    del config["num_key_value_heads"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert estimate_model_memory(tmp_path).read_from == "meta-device"


@pytest.mark.parametrize("model_type", sorted(SMALL))
def test_architecture_facts_match_transformers(models: dict[str, Path], model_type: str) -> None:
    import torch

    estimate = estimate_model_memory(models[model_type], meta_device=True)
    model = estimate.meta_model
    facts = ARCHITECTURES[model_type]
    shape = estimate_model_memory(models[model_type]).shape
    assert shape is not None
    # Read from the installed transformers, so this holds on any release.
    sdpa = "sdpa" if getattr(model, "_supports_sdpa", False) else "eager"
    assert shape.attention == sdpa, shape.attention_source
    assert set(facts.keep_fp32) == set(getattr(model, "_keep_in_fp32_modules", None) or ())
    assert facts.rotary == any("rotary" in name for name, _ in model.named_buffers())
    conv1d = any(type(m).__name__ == "Conv1D" for m in model.modules())
    assert facts.conv1d == conv1d
    assert facts.encoder_decoder == bool(model.config.is_encoder_decoder)
    default = type(model.config)()
    config = json.loads((models[model_type] / "config.json").read_text())
    assert shape.tie_word_embeddings == bool(model.config.tie_word_embeddings)
    if "max_position_embeddings" not in config and "n_positions" not in config:
        positions = getattr(default, "max_position_embeddings", None)
        assert shape.max_positions == positions
    assert facts.model_class == type(model).__name__
    assert not any(
        isinstance(m, torch.nn.Embedding) and "lm_head" in n for n, m in model.named_modules()
    )


def test_header_path_imports_no_torch(models: dict[str, Path]) -> None:
    code = (
        "import sys\n"
        "from pytest_gpuinfer.probes.memory_fit import estimate_model_memory, fit_on_devices\n"
        f"e = estimate_model_memory({str(models['llama'])!r})\n"
        "fit_on_devices(e, [])\n"
        "print(e.read_from, sorted(m for m in ('torch', 'transformers', 'numpy') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "safetensors-header []"


def test_sharded_checkpoint(tmp_path: Path) -> None:
    import transformers

    model_dir = write_random_model(tmp_path / "one", "llama")
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    sharded = estimate_model_memory(tmp_path / "sharded")
    assert sharded.read_from == "safetensors-header"
    assert sharded.weights_bytes("int8") == estimate_model_memory(model_dir).weights_bytes("int8")


def _copy(models: dict[str, Path], tmp_path: Path, name: str = "llama") -> Path:
    import shutil

    return Path(shutil.copytree(models[name], tmp_path / name))


def test_truncated_header_is_one_line_naming_the_file(
    models: dict[str, Path], tmp_path: Path
) -> None:
    directory = _copy(models, tmp_path)
    file = directory / "model.safetensors"
    file.write_bytes(file.read_bytes()[:200])
    with pytest.raises(InputError) as error:
        estimate_model_memory(directory)
    message = str(error.value)
    assert "\n" not in message
    assert f"safetensors file '{file}' is corrupt or truncated" in message


def test_corrupt_header_json(models: dict[str, Path], tmp_path: Path) -> None:
    directory = _copy(models, tmp_path)
    file = directory / "model.safetensors"
    data = file.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    file.write_bytes(data[:8] + b"{" * length + data[8 + length :])
    with pytest.raises(InputError, match=r"model.safetensors' has a corrupt header: not JSON"):
        estimate_model_memory(directory)
    file.write_bytes(b"\x01\x02")
    with pytest.raises(InputError, match=r"is truncated: 2 bytes"):
        read_header(file)


def test_data_shorter_than_the_header_says(models: dict[str, Path], tmp_path: Path) -> None:
    directory = _copy(models, tmp_path)
    file = directory / "model.safetensors"
    file.write_bytes(file.read_bytes()[:-100])
    with pytest.raises(InputError, match=r"is truncated or corrupt: tensor '.*' needs bytes"):
        estimate_model_memory(directory)


def test_weights_that_disagree_with_the_config(models: dict[str, Path], tmp_path: Path) -> None:
    directory = _copy(models, tmp_path)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 4}))
    with pytest.raises(
        InputError,
        match=r"disagree with config.json: the checkpoint has 2 layers in 'model' but the "
        r"config says 4",
    ):
        estimate_model_memory(directory)
    (directory / "config.json").write_text(json.dumps({**config, "vocab_size": 120}))
    with pytest.raises(InputError, match=r"'model.embed_tokens.weight' has shape \[100, 64\]"):
        estimate_model_memory(directory)


def test_unknown_architecture_checkpoint_is_read_from_its_headers(tmp_path: Path) -> None:
    import transformers

    config = transformers.GPTNeoXConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        vocab_size=100,
    )  # fmt: skip
    auto: Any = transformers.AutoModelForCausalLM
    auto.from_config(config).save_pretrained(tmp_path / "neox")
    # No workload model, but the config gives the shapes: no meta-device build.
    estimate = estimate_model_memory(tmp_path / "neox")
    assert estimate.read_from == "safetensors-header"
    assert estimate.model_type == "gpt_neox"
    assert estimate.shape is not None and estimate.shape.architecture is None
    assert estimate.shape.layers == 2
    slow = estimate_model_memory(tmp_path / "neox", meta_device=True)
    assert slow.read_from == "meta-device"
    for mode in ("fp16", "int8", "nf4"):
        # Parameters exactly; buffers are guessed (full-width rotary) without the class.
        assert estimate.modes[mode].parameter_bytes == slow.modes[mode].parameter_bytes, mode


def test_unknown_bare_config_is_built_on_the_meta_device(tmp_path: Path) -> None:
    config = {"model_type": "gpt_neox", "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert estimate_model_memory(tmp_path).read_from == "meta-device"


def test_config_without_sizes_estimates_weights_only(tmp_path: Path) -> None:
    from pytest_gpuinfer.probes.memory_fit import fit_on_devices

    directory = tmp_path / "resnet"
    directory.mkdir()
    # A vision model: no hidden size, heads or vocabulary for a generate() workload.
    (directory / "config.json").write_text(json.dumps({"model_type": "resnet"}))
    estimate = estimate_model_memory(directory, ["fp16"])
    assert estimate.shape is None and "hidden_size" in estimate.shape_error
    fit = fit_on_devices(estimate, [])
    assert fit.fits["fp16"].workload is None
    assert fit.warnings[0].startswith("only the weights are judged:")

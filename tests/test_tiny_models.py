from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from probes.errors import InputError
from pytest_gpuinfer import tiny_models
from pytest_gpuinfer.tiny_models import (
    ARCHITECTURES,
    TASK_AUTO_CLASSES,
    write_tiny_model,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="module")
def written(tiny_root: Path) -> dict[str, Path]:
    return {name: write_tiny_model(name, tiny_root / name) for name in ARCHITECTURES}


def _load(directory: Path, task: str, **kwargs: Any) -> Any:
    auto_class = getattr(transformers, TASK_AUTO_CLASSES[task])
    return auto_class.from_pretrained(directory, **kwargs).eval()


def _state(model: Any) -> dict[str, Any]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def test_architectures_cover_the_required_set() -> None:
    assert {"llama", "gpt2", "bloom", "opt", "bert", "t5"} <= set(ARCHITECTURES)
    assert ARCHITECTURES["llama"].config_values()["num_key_value_heads"] == 2
    assert ARCHITECTURES["t5"].task == "seq2seq-lm"
    assert ARCHITECTURES["bert"].task == "encoder"
    for spec in ARCHITECTURES.values():
        assert spec.task in TASK_AUTO_CLASSES


def test_byte_symbols_match_the_byte_level_alphabet() -> None:
    from tokenizers.pre_tokenizers import ByteLevel

    symbols = tiny_models._byte_symbols()
    assert len(symbols) == 256
    assert set(symbols) == set(ByteLevel.alphabet())


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_written_model_loads_and_runs(written: dict[str, Path], architecture: str) -> None:
    spec = ARCHITECTURES[architecture]
    directory = written[architecture]
    assert (directory / "model.safetensors").is_file()
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == spec.model_type

    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    model = _load(directory, spec.task)
    assert len(tokenizer) == model.config.vocab_size == spec.vocab_size
    assert tokenizer.pad_token_id == spec.token_id("pad")

    # Two texts of different lengths: padding must work for every architecture.
    batch = tokenizer(["hello tiny world", "hi"], return_tensors="pt", padding=True)
    assert tokenizer.decode(batch.input_ids[0], skip_special_tokens=True) == "hello tiny world"
    with torch.no_grad():
        if spec.task == "causal-lm":
            assert tokenizer.padding_side == "left"
            output = model.generate(**batch, max_new_tokens=3, min_new_tokens=3, do_sample=False)
            assert output.shape == (2, batch.input_ids.shape[1] + 3)
        elif spec.task == "seq2seq-lm":
            output = model.generate(**batch, max_new_tokens=3, min_new_tokens=3, do_sample=False)
            assert output.shape == (2, 4)
            assert (
                output[0, 0].item() == model.config.decoder_start_token_id == spec.token_id("pad")
            )
        else:
            hidden = model(**batch).last_hidden_state
            assert hidden.shape == (2, batch.input_ids.shape[1], 64)


def test_bert_tokenizer_wraps_texts_in_cls_and_sep(written: dict[str, Path]) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(written["bert"])
    encoded = tokenizer("ab", "cd")
    tokens = tokenizer.convert_ids_to_tokens(encoded.input_ids)
    assert tokens == ["[CLS]", "a", "b", "[SEP]", "c", "d", "[SEP]"]
    assert encoded.token_type_ids == [0, 0, 0, 0, 1, 1, 1]
    assert tokenizer.mask_token == "[MASK]"


def test_same_seed_gives_identical_weights(tiny_root: Path, written: dict[str, Path]) -> None:
    again = write_tiny_model("llama", tiny_root / "llama-again", seed=0)
    other = write_tiny_model("llama", tiny_root / "llama-seed-1", seed=1)
    first = _state(_load(written["llama"], "causal-lm"))
    second = _state(_load(again, "causal-lm"))
    third = _state(_load(other, "causal-lm"))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert not all(torch.equal(first[name], third[name]) for name in first)


def test_writing_leaves_the_callers_rng_alone(tiny_root: Path) -> None:
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    write_tiny_model("gpt2", tiny_root / "gpt2-rng", seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_complete_directory_is_reused(written: dict[str, Path]) -> None:
    weights = written["gpt2"] / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert write_tiny_model("gpt2", written["gpt2"]) == written["gpt2"]
    assert weights.stat().st_mtime_ns == before


def test_incomplete_directory_is_rewritten(tiny_root: Path) -> None:
    directory = write_tiny_model("opt", tiny_root / "opt-broken")
    (directory / "model.safetensors").unlink()
    write_tiny_model("opt", directory)
    assert (directory / "model.safetensors").is_file()


def test_other_seed_in_same_directory_is_rewritten(tiny_root: Path) -> None:
    directory = write_tiny_model("bloom", tiny_root / "bloom-reseed", seed=0)
    first = _state(_load(directory, "causal-lm"))
    write_tiny_model("bloom", directory, seed=1)
    second = _state(_load(directory, "causal-lm"))
    assert not all(torch.equal(first[name], second[name]) for name in first)


def test_dtype_and_task_options(tiny_root: Path) -> None:
    directory = write_tiny_model(
        "bert", tiny_root / "bert-mlm-fp16", task="masked-lm", dtype="float16"
    )
    model = _load(directory, "masked-lm", torch_dtype="auto")
    assert model.dtype == torch.float16
    assert type(model).__name__ == "BertForMaskedLM"


def test_unknown_architecture_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"'mamba'.*llama, gpt2, bloom, opt, bert, t5") as info:
        write_tiny_model("mamba", tmp_path)
    assert "\n" not in str(info.value)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [({"task": "seq2seq-lm"}, r"task 'seq2seq-lm'.*causal-lm"), ({"dtype": "int8"}, r"'int8'")],
)
def test_bad_task_or_dtype_is_an_input_error(
    tmp_path: Path, kwargs: dict[str, str], pattern: str
) -> None:
    with pytest.raises(InputError, match=pattern):
        write_tiny_model("llama", tmp_path, **kwargs)


def test_module_imports_without_torch() -> None:
    # The plugin imports this module at collection: it must not pull in the HF stack.
    import subprocess
    import sys

    code = (
        "import sys; import pytest_gpuinfer.tiny_models; "
        "print(sorted(m for m in ('torch', 'transformers', 'tokenizers') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_gpuinfer import tiny_models
from pytest_gpuinfer.probes.errors import InputError
from pytest_gpuinfer.tiny_models import (
    ARCHITECTURES,
    TASK_AUTO_CLASSES,
    TRAINED_CONTINUATION,
    TRAINED_PROMPT,
    trained_model_path,
    write_tiny_model,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    # Tiny models run faster on one thread, and far faster on a busy shared machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="module")
def written(tiny_root: Path) -> dict[str, Path]:
    return {name: write_tiny_model(name, tiny_root / name) for name in ARCHITECTURES}


def _load(directory: Path, task: str, **kwargs: Any) -> Any:
    auto_class = getattr(transformers, TASK_AUTO_CLASSES[task])
    return auto_class.from_pretrained(directory, **kwargs).eval()


def _dtype_kwargs(dtype: Any) -> dict[str, Any]:
    # transformers 5 renamed torch_dtype= to dtype=; 4.x knows only the old name.
    major = int(transformers.__version__.split(".")[0])
    return {"dtype": dtype} if major >= 5 else {"torch_dtype": dtype}


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
    tmp_path: Path, kwargs: dict[str, Any], pattern: str
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


# --- the shipped trained model ---------------------------------------------------------


def _continuation(model: Any, tokenizer: Any, prompts: list[str], row: int = 0) -> str:
    batch = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
    with torch.no_grad():
        output = model.generate(
            **batch, max_new_tokens=len(TRAINED_CONTINUATION) + 8, do_sample=False
        )
    new_tokens = output[row, batch.input_ids.shape[1] :]
    text: str = tokenizer.decode(new_tokens, skip_special_tokens=True)
    return text


@pytest.fixture(scope="module")
def trained_tokenizer() -> Any:
    return transformers.AutoTokenizer.from_pretrained(trained_model_path())


def test_trained_model_is_shipped_small_and_documented() -> None:
    directory = trained_model_path()
    names = {path.name for path in directory.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert {"generation_config.json", "README.md"} <= names
    assert sum(path.stat().st_size for path in directory.iterdir()) < 8 * 1024 * 1024
    readme = (directory / "README.md").read_text(encoding="utf-8")
    assert repr(TRAINED_PROMPT) in readme and repr(TRAINED_CONTINUATION) in readme
    assert "python scripts/train_tiny_lm.py" in readme


@pytest.mark.parametrize(
    ("attention", "dtype"),
    [("eager", "float32"), ("sdpa", "float32"), ("sdpa", "float16"), ("sdpa", "bfloat16")],
)
def test_trained_model_continues_the_prompt(
    trained_tokenizer: Any, attention: str, dtype: str
) -> None:
    model = _load(
        trained_model_path(),
        "causal-lm",
        attn_implementation=attention,
        **_dtype_kwargs(getattr(torch, dtype)),
    )
    assert model.config._attn_implementation == attention
    assert _continuation(model, trained_tokenizer, [TRAINED_PROMPT]) == TRAINED_CONTINUATION


def test_trained_model_has_a_wide_logit_margin(trained_tokenizer: Any) -> None:
    model = _load(trained_model_path(), "causal-lm", **_dtype_kwargs(torch.float32))
    prompt_length = len(trained_tokenizer(TRAINED_PROMPT).input_ids)
    ids = trained_tokenizer(TRAINED_PROMPT + TRAINED_CONTINUATION).input_ids
    ids.append(trained_tokenizer.eos_token_id)
    with torch.no_grad():
        logits = model(torch.tensor([ids[:-1]])).logits[0, prompt_length - 1 :]
    top = logits.topk(2, dim=-1)
    assert top.indices[:, 0].tolist() == ids[prompt_length:]
    # What keeps the continuation stable under fp16, int8 and kernel differences.
    assert (top.values[:, 0] - top.values[:, 1]).min().item() > 5.0


def test_trained_model_generates_in_a_left_padded_batch(trained_tokenizer: Any) -> None:
    model = _load(trained_model_path(), "causal-lm", **_dtype_kwargs(torch.float32))
    prompts = ["a much longer line that forces padding", TRAINED_PROMPT]
    assert _continuation(model, trained_tokenizer, prompts, row=1) == TRAINED_CONTINUATION


def _bitsandbytes_version() -> tuple[int, ...] | None:
    if importlib.util.find_spec("bitsandbytes") is None:
        return None
    from importlib.metadata import version

    return tuple(int(part) for part in version("bitsandbytes").split(".")[:2])


_BNB_VERSION = _bitsandbytes_version()
needs_bitsandbytes = pytest.mark.skipif(_BNB_VERSION is None, reason="bitsandbytes not installed")
# transformers 4.x's bitsandbytes backend check calls .discard on what bitsandbytes 0.50
# made a frozenset: loading in int8 or 4-bit fails before any model code runs.
legacy_bnb_clash = pytest.mark.xfail(
    int(transformers.__version__.split(".")[0]) < 5
    and _BNB_VERSION is not None
    and _BNB_VERSION >= (0, 50),
    reason="transformers 4.x cannot load with bitsandbytes >= 0.50 ('frozenset' has no 'discard')",
    raises=AttributeError,
    strict=False,
)


@needs_bitsandbytes
@legacy_bnb_clash
@pytest.mark.parametrize("quantization", ["int8", "nf4"])
def test_trained_model_continues_the_prompt_quantized_on_cpu(
    trained_tokenizer: Any, quantization: str
) -> None:
    if quantization == "int8":
        config = transformers.BitsAndBytesConfig(load_in_8bit=True)
        # fp16 activations, as LLM.int8 is used (fp32 ones make bitsandbytes log a warning
        # on every matmul).
        dtype = torch.float16
    else:
        config = transformers.BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
        )
        dtype = torch.float32
    model = _load(
        trained_model_path(),
        "causal-lm",
        quantization_config=config,
        device_map="cpu",
        **_dtype_kwargs(dtype),
    )
    quantized = {type(module).__name__ for module in model.modules()}
    assert ("Linear8bitLt" if quantization == "int8" else "Linear4bit") in quantized
    assert _continuation(model, trained_tokenizer, [TRAINED_PROMPT]) == TRAINED_CONTINUATION


def test_config_overrides_resize_the_model_and_key_the_reuse(tmp_path: Path) -> None:
    path = tmp_path / "wide"
    write_tiny_model("llama", path, config_overrides={"hidden_size": 128, "num_hidden_layers": 1})
    config = json.loads((path / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"]) == (128, 1)
    # Other overrides are another model: the directory is rewritten, not reused.
    write_tiny_model("llama", path, config_overrides={"hidden_size": 96, "num_hidden_layers": 1})
    assert json.loads((path / "config.json").read_text())["hidden_size"] == 96

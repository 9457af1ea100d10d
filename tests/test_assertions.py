"""pytest_gpuinfer.assertions: each check passes on good models and fails on broken ones."""

from __future__ import annotations

import copy
import logging
import re
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_gpuinfer.assertions import (
    DEFAULT_TOLERANCES,
    LogitsTolerance,
    assert_device_map,
    assert_embeddings_close,
    assert_generation_close,
    assert_logits_close,
    assert_memory_footprint,
    assert_on_device,
    assert_quantized,
)
from pytest_gpuinfer.probes.errors import InputError
from pytest_gpuinfer.tiny_models import write_tiny_model

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PROMPTS = ["The quick brown fox", "Hello, world!"]
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Pack my box with five dozen jugs."]


@pytest.fixture(autouse=True)
def _quiet() -> None:
    # bitsandbytes warns on every CPU int8 matmul; transformers on generation settings.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    transformers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*MatMul8bitLt.*")


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("assertion-models")
    return {
        "llama": write_tiny_model("llama", root / "llama"),
        "gpt2": write_tiny_model("gpt2", root / "gpt2"),
        "bert": write_tiny_model("bert", root / "bert"),
        "t5": write_tiny_model("t5", root / "t5"),
    }


def _causal(path: Path, **kwargs: Any) -> Any:
    kwargs.setdefault("device_map", "cpu")
    kwargs.setdefault("attn_implementation", "eager")
    return transformers.AutoModelForCausalLM.from_pretrained(path, **kwargs).eval()


def _int8(path: Path, **config: Any) -> Any:
    quantization = transformers.BitsAndBytesConfig(load_in_8bit=True, **config)
    return _causal(path, quantization_config=quantization, dtype=torch.float16)


@pytest.fixture(scope="module")
def tokenizer(paths: dict[str, Path]) -> Any:
    return transformers.AutoTokenizer.from_pretrained(paths["llama"])


@pytest.fixture(scope="module")
def llama(paths: dict[str, Path]) -> Any:
    return _causal(paths["llama"], dtype=torch.float32)


@pytest.fixture(scope="module")
def llama_int8(paths: dict[str, Path]) -> Any:
    return _int8(paths["llama"])


def _untie_and_swap_rows(model: Any, a: int, b: int) -> Any:
    """A copy whose lm_head scores token ``a`` as ``b`` and ``b`` as ``a``."""
    broken = copy.deepcopy(model)
    weight = broken.lm_head.weight.detach().clone()
    weight[[a, b]] = weight[[b, a]]
    broken.lm_head.weight = torch.nn.Parameter(weight, requires_grad=False)
    return broken


def _first_step_logprobs(model: Any, tokenizer: Any, prompt: str) -> Any:
    with torch.no_grad():
        logits = model(**tokenizer(prompt, return_tensors="pt")).logits[0, -1]
    return torch.log_softmax(logits.float(), dim=-1)


# --------------------------------------------------------------------------- assert_on_device


def test_on_device_passes_for_batch_encoding_dict_and_tensor(llama: Any, tokenizer: Any) -> None:
    encoded = tokenizer(PROMPTS[0], return_tensors="pt")
    assert_on_device(llama, encoded)
    assert_on_device(llama, dict(encoded))
    assert_on_device(llama, encoded["input_ids"])
    assert_on_device(SimpleNamespace(model=llama, tokenizer=tokenizer), [encoded["input_ids"]])


def test_on_device_fails_for_inputs_elsewhere(llama: Any, tokenizer: Any) -> None:
    encoded = tokenizer(PROMPTS[0], return_tensors="pt")
    inputs = {"input_ids": encoded["input_ids"].to("meta"), "mask": encoded["attention_mask"]}
    with pytest.raises(
        AssertionError, match=r"1 of 2 input tensors are not on the model's device cpu"
    ) as caught:
        assert_on_device(llama, inputs)
    message = str(caught.value)
    assert "input_ids: meta" in message
    assert "mask" not in message
    assert "inputs.to(model.device)" in message


def test_on_device_fails_for_a_model_on_another_device(tokenizer: Any) -> None:
    with torch.device("meta"):
        on_meta = torch.nn.Linear(4, 4)
    with pytest.raises(AssertionError, match=r"model's device meta:\n  inputs: cpu"):
        assert_on_device(on_meta, torch.zeros(1, 4))


def test_on_device_rejects_inputs_without_tensors(llama: Any) -> None:
    with pytest.raises(InputError, match="no tensors"):
        assert_on_device(llama, {"text": "hello"})


# --------------------------------------------------------------------------- assert_device_map


def test_device_map_passes_for_matching_maps(llama: Any) -> None:
    assert_device_map(llama, "cpu")
    assert_device_map(llama, {"": torch.device("cpu")})
    assert_device_map(llama, {"model": "cpu", "lm_head": "cpu"})


def test_device_map_fails_with_a_diff_when_expecting_a_gpu(llama: Any) -> None:
    with pytest.raises(AssertionError) as caught:
        assert_device_map(llama, {"model": "cpu", "lm_head": 0})
    message = str(caught.value)
    assert message.startswith("1 of ")
    assert re.search(r"lm_head\.weight\s+cuda:0\s+cpu", message)
    assert "model.layers" not in message


def test_device_map_fails_for_a_parameter_on_meta(llama: Any) -> None:
    broken = copy.deepcopy(llama)
    projection = broken.model.layers[1].self_attn.q_proj
    projection.weight = torch.nn.Parameter(projection.weight.to("meta"), requires_grad=False)
    with pytest.raises(
        AssertionError, match=r"model\.layers\.1\.self_attn\.q_proj\.weight\s+cpu\s+meta"
    ):
        assert_device_map(broken, {"": "cpu"})


def test_device_map_reports_unmapped_tensors_and_caps_the_list(llama: Any) -> None:
    with pytest.raises(AssertionError) as caught:
        assert_device_map(llama, {"lm_head": "cpu"})
    message = str(caught.value)
    assert re.search(r"model\.embed_tokens\.weight\s+\(not in map\)\s+cpu", message)
    assert re.search(r"\.\.\. and \d+ more$", message)
    assert len(message.splitlines()) == 1 + 1 + 20 + 1


def test_device_map_prefixes_stop_at_module_boundaries() -> None:
    stack = torch.nn.Sequential(*(torch.nn.Linear(1, 1) for _ in range(11)))
    stack[1].to("meta")
    assert_device_map(stack, {"": "cpu", "1": "meta"})  # "1" must not claim "10"
    with pytest.raises(AssertionError, match=r"^2 of 22 .*\n.*\n  1\.weight\s+cpu\s+meta"):
        assert_device_map(stack, {"": "cpu"})


def test_device_map_resolves_accelerate_disk_offload(
    paths: dict[str, Path], tmp_path: Path
) -> None:
    device_map = {
        "model.embed_tokens": "cpu",
        "model.layers.0": "cpu",
        "model.layers.1": "disk",
        "model.norm": "cpu",
        "model.rotary_emb": "cpu",
        "lm_head": "disk",
    }
    offloaded = _causal(paths["llama"], device_map=device_map, offload_folder=str(tmp_path))
    assert_device_map(offloaded, device_map)
    assert_device_map(offloaded, offloaded.hf_device_map)
    with pytest.raises(AssertionError, match=r"lm_head\.weight\s+cpu\s+disk"):
        assert_device_map(offloaded, {**device_map, "lm_head": "cpu"})


def test_device_map_rejects_bad_devices(llama: Any) -> None:
    with pytest.raises(InputError, match="'gpu0' is not a device"):
        assert_device_map(llama, {"": "gpu0"})


# --------------------------------------------------------------------------- assert_quantized


def test_quantized_passes_for_int8_and_nf4(paths: dict[str, Path], llama_int8: Any) -> None:
    assert_quantized(llama_int8)
    assert_quantized(SimpleNamespace(model=llama_int8, tokenizer=None))
    nf4 = _causal(
        paths["llama"],
        quantization_config=transformers.BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4"
        ),
    )
    assert_quantized(nf4, bits=4)
    with pytest.raises(AssertionError, match=r"14 of 14 eligible .* not 8-bit"):
        assert_quantized(nf4)


def test_quantized_covers_gpt2_conv1d(paths: dict[str, Path]) -> None:
    assert_quantized(_int8(paths["gpt2"]))
    with pytest.raises(AssertionError, match=r"transformer\.h\.0\.attn\.c_attn: Conv1D"):
        assert_quantized(_causal(paths["gpt2"]))


def test_quantized_fails_for_one_unquantized_layer(llama_int8: Any) -> None:
    broken = copy.deepcopy(llama_int8)
    broken.model.layers[0].mlp.up_proj = torch.nn.Linear(64, 128, bias=False)
    with pytest.raises(AssertionError) as caught:
        assert_quantized(broken)
    message = str(caught.value)
    assert message.startswith("1 of 14 eligible linear layers are not 8-bit bitsandbytes layers")
    assert "model.layers.0.mlp.up_proj: Linear (not quantized to int8), weight float32" in message
    assert "kept in full precision by transformers' rules: lm_head" in message


def test_quantized_fails_for_a_full_precision_model_and_caps_the_list(llama: Any) -> None:
    with pytest.raises(AssertionError) as caught:
        assert_quantized(llama)
    lines = str(caught.value).splitlines()
    assert lines[0].startswith("14 of 14 eligible")
    assert len(lines) == 1 + 14 + 1


def test_quantized_honours_llm_int8_skip_modules(paths: dict[str, Path]) -> None:
    model = _int8(paths["llama"], llm_int8_skip_modules=["down_proj", "lm_head"])
    assert type(model.model.layers[0].mlp.down_proj) is torch.nn.Linear
    assert_quantized(model)


def test_quantized_rejects_other_bit_widths(llama_int8: Any) -> None:
    with pytest.raises(InputError, match="bits=3"):
        assert_quantized(llama_int8, bits=3)


# --------------------------------------------------------------------------- footprint


def test_memory_footprint_ratio(paths: dict[str, Path], llama_int8: Any) -> None:
    fp16 = _causal(paths["llama"], dtype=torch.float16)
    ratio = assert_memory_footprint(fp16, llama_int8, min_ratio=1.3)
    assert ratio == pytest.approx(fp16.get_memory_footprint() / llama_int8.get_memory_footprint())
    with pytest.raises(AssertionError) as caught:
        assert_memory_footprint(fp16, llama_int8, min_ratio=2.0)
    message = str(caught.value)
    assert message.startswith(f"memory footprint ratio {ratio:.3f} < 2.0: reference ")
    assert f"({fp16.get_memory_footprint()} B, float16)" in message
    assert f"({llama_int8.get_memory_footprint()} B, int8)" in message


def test_memory_footprint_fails_when_nothing_was_saved(llama: Any) -> None:
    with pytest.raises(AssertionError, match=r"ratio 1\.000 < 1\.5"):
        assert_memory_footprint(llama, llama, min_ratio=1.5)


# --------------------------------------------------------------------------- generation


def test_generation_close_passes_for_identical_and_int8(
    llama: Any, llama_int8: Any, tokenizer: Any
) -> None:
    same = assert_generation_close((llama, tokenizer), llama, PROMPTS, max_new_tokens=8)
    assert [c.first_divergence for c in same] == [None, None]
    assert same[0].reference_text == same[0].candidate_text
    loaded = SimpleNamespace(model=llama_int8, tokenizer=tokenizer, mode="int8")
    result = assert_generation_close(llama, loaded, PROMPTS, max_new_tokens=8, tokenizer=tokenizer)
    assert len(result) == 2


def test_generation_close_fails_outside_top_k(llama: Any, tokenizer: Any) -> None:
    prompt = PROMPTS[0]
    logprobs = _first_step_logprobs(llama, tokenizer, prompt)
    best, worst = int(logprobs.argmax()), int(logprobs.argmin())
    broken = _untie_and_swap_rows(llama, best, worst)
    with pytest.raises(AssertionError) as caught:
        assert_generation_close(llama, broken, [prompt], max_new_tokens=6, tokenizer=tokenizer)
    message = str(caught.value)
    assert message.startswith(
        "generations diverge at new token 0 for prompt 1 of 1: 'The quick brown fox'"
    )
    assert "the candidate's token is not in the reference's top-5" in message
    assert "the reference's token is not in the candidate's top-5" in message
    assert f"token {best} {tokenizer.decode([best])!r}" in message
    assert f"token {worst} {tokenizer.decode([worst])!r}" in message
    assert message.count("top-5: ") == 2
    reference_text = assert_generation_close(
        llama, llama, prompt, max_new_tokens=6, tokenizer=tokenizer
    )[0].reference_text
    assert f"reference: '' | {reference_text!r}" in message


def test_generation_close_allows_a_near_tie_divergence(llama: Any, tokenizer: Any) -> None:
    prompt = PROMPTS[0]
    logprobs = _first_step_logprobs(llama, tokenizer, prompt)
    first, second = (int(i) for i in logprobs.topk(2).indices)
    swapped = _untie_and_swap_rows(llama, first, second)
    result = assert_generation_close(llama, swapped, prompt, max_new_tokens=6, tokenizer=tokenizer)
    assert result[0].first_divergence == 0
    with pytest.raises(AssertionError, match="not in the reference's top-1"):
        assert_generation_close(
            llama, swapped, prompt, max_new_tokens=6, top_k=1, tokenizer=tokenizer
        )


def test_generation_close_fails_for_a_truncated_generation(llama: Any, tokenizer: Any) -> None:
    prompt = PROMPTS[1]
    full = assert_generation_close(llama, llama, prompt, max_new_tokens=8, tokenizer=tokenizer)
    tokens = full[0].reference_tokens
    truncated = copy.deepcopy(llama)
    truncated.generation_config.eos_token_id = tokens[2]
    if tokens[2] in tokens[:2]:
        pytest.skip("the random model repeats a token early")
    with pytest.raises(AssertionError) as caught:
        assert_generation_close(llama, truncated, prompt, max_new_tokens=8, tokenizer=tokenizer)
    message = str(caught.value)
    assert "diverge at new token 3" in message
    assert "the candidate stopped after 3 new tokens while the other went on" in message
    assert "(ended here)" in message


def test_generation_close_needs_a_tokenizer(llama: Any) -> None:
    with pytest.raises(InputError, match="needs a tokenizer"):
        assert_generation_close(llama, llama, PROMPTS, max_new_tokens=2)


# --------------------------------------------------------------------------- logits


def test_logits_close_passes_with_mode_defaults(
    paths: dict[str, Path], llama: Any, llama_int8: Any, tokenizer: Any
) -> None:
    result = assert_logits_close((llama, tokenizer), llama_int8, TEXTS)
    assert result.mode == "int8"
    assert result.tolerance == DEFAULT_TOLERANCES["int8"]
    assert result.positions == sum(len(tokenizer(t)["input_ids"]) for t in TEXTS)
    assert 0 < result.mean_abs_error <= result.max_abs_error
    fp16 = _causal(paths["llama"], dtype=torch.float16)
    assert assert_logits_close(llama, (fp16, tokenizer), TEXTS).mode == "fp16"
    loaded = SimpleNamespace(model=fp16, tokenizer=tokenizer, mode="fastpath")
    assert assert_logits_close(llama, loaded, TEXTS).mode == "fastpath"


def test_logits_close_masks_padding(llama: Any, tokenizer: Any) -> None:
    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    result = assert_logits_close(llama, llama, batch)
    assert result.positions == int(batch["attention_mask"].sum())
    assert result.max_abs_error == 0.0
    assert result.top1_agreement == 1.0
    assert (
        assert_logits_close(llama, llama, batch["input_ids"]).positions
        == batch["input_ids"].numel()
    )


def test_logits_close_fails_for_corrupted_weights(llama: Any, tokenizer: Any) -> None:
    broken = copy.deepcopy(llama)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in broken.model.layers:
            weight = layer.mlp.down_proj.weight
            weight += 0.2 * torch.randn(weight.shape, generator=generator)
    with pytest.raises(AssertionError) as caught:
        assert_logits_close(llama, broken, TEXTS, tokenizer=tokenizer, mode="fp16")
    message = str(caught.value)
    assert message.startswith("logits not close (fp16 tolerances): ")
    assert "max abs logprob error" in message
    assert "mean abs logprob error" in message
    assert re.search(r"max abs error [\d.]+ at input \d+ position \d+", message)


def test_logits_close_fails_on_top1_agreement(llama: Any, tokenizer: Any) -> None:
    logprobs = _first_step_logprobs(llama, tokenizer, TEXTS[0])
    best, worst = int(logprobs.argmax()), int(logprobs.argmin())
    broken = _untie_and_swap_rows(llama, best, worst)
    with pytest.raises(AssertionError, match=r"top-1 agreement 0\.\d+ < 1\.0"):
        assert_logits_close(
            llama,
            broken,
            TEXTS,
            tokenizer=tokenizer,
            min_top1_agreement=1.0,
            max_abs_error=1e9,
            mean_abs_error=1e9,
            tie_margin=0.0,
        )


def test_logits_close_takes_a_whole_tolerance_and_single_overrides(
    paths: dict[str, Path], llama: Any, tokenizer: Any
) -> None:
    loose = LogitsTolerance(0.5, 100.0, 10.0, 0.5)
    result = assert_logits_close(llama, llama, TEXTS, tokenizer=tokenizer, tolerance=loose)
    assert result.tolerance == loose
    assert result.mode == "fp32"
    tightened = assert_logits_close(
        llama, llama, TEXTS, tokenizer=tokenizer, tolerance=loose, tie_margin=0.0
    )
    assert tightened.tolerance == LogitsTolerance(0.5, 100.0, 10.0, 0.0)
    logprobs = _first_step_logprobs(llama, tokenizer, TEXTS[0])
    broken = _untie_and_swap_rows(llama, int(logprobs.argmax()), int(logprobs.argmin()))
    strict = LogitsTolerance(1.0, 1e9, 1e9, 0.0)
    with pytest.raises(AssertionError, match=r"^logits not close \(explicit tolerances\): top-1"):
        assert_logits_close(llama, broken, TEXTS, tokenizer=tokenizer, tolerance=strict)
    bf16 = _causal(paths["llama"], dtype=torch.bfloat16)
    assert assert_logits_close(llama, (bf16, tokenizer), TEXTS).mode == "bf16"


def test_the_documented_tolerances_are_the_defaults() -> None:
    text = (Path(__file__).parents[1] / "docs" / "writing-tests.md").read_text()
    table = text.split("| mode | min top-1 agreement |", 1)[1].split("\n\n", 1)[0]
    rows = [line.strip("| ").split(" | ") for line in table.splitlines()[2:]]
    documented = {
        mode: LogitsTolerance(*(float(value) for value in values)) for mode, *values in rows
    }
    assert documented == dict(DEFAULT_TOLERANCES)


def test_logits_close_rejects_unknown_modes(llama: Any) -> None:
    with pytest.raises(InputError, match="mode='fp8'"):
        assert_logits_close(llama, llama, torch.tensor([[1, 2, 3]]), mode="fp8")


# --------------------------------------------------------------------------- embeddings


def test_embeddings_close_for_encoders(paths: dict[str, Path]) -> None:
    tok = transformers.AutoTokenizer.from_pretrained(paths["bert"])
    bert = transformers.AutoModel.from_pretrained(paths["bert"]).eval()
    bert16 = transformers.AutoModel.from_pretrained(paths["bert"], dtype=torch.float16).eval()
    cosines = assert_embeddings_close((bert, tok), bert16, TEXTS)
    assert all(c > 0.999 for c in cosines)
    assert assert_embeddings_close((bert, tok), bert16, TEXTS, pooling="cls")[0] > 0.999
    t5 = transformers.AutoModelForSeq2SeqLM.from_pretrained(paths["t5"]).eval()
    t5_tok = transformers.AutoTokenizer.from_pretrained(paths["t5"])
    assert assert_embeddings_close(t5, t5, TEXTS[0], tokenizer=t5_tok) == [pytest.approx(1.0)]


def test_embeddings_close_fails_for_a_corrupted_encoder(paths: dict[str, Path]) -> None:
    tok = transformers.AutoTokenizer.from_pretrained(paths["bert"])
    bert = transformers.AutoModel.from_pretrained(paths["bert"]).eval()
    broken = copy.deepcopy(bert)
    with torch.no_grad():
        broken.encoder.layer[-1].output.dense.weight.mul_(-3.0)
    with pytest.raises(AssertionError) as caught:
        assert_embeddings_close(bert, broken, TEXTS, tokenizer=tok)
    message = str(caught.value)
    assert message.startswith("2 of 2 embeddings have cosine < 0.999 (mean pooling; lowest ")
    assert repr(TEXTS[1]) in message

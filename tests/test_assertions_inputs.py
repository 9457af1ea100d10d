"""pytest_gpuinfer.assertions: every bad argument is one InputError line naming the value."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest

from pytest_gpuinfer import assertions
from pytest_gpuinfer.assertions import (
    LogitsTolerance,
    assert_device_map,
    assert_embeddings_close,
    assert_generation_close,
    assert_logits_close,
    assert_memory_footprint,
    assert_on_device,
    assert_quantized,
)
from pytest_gpuinfer.probes import modes
from pytest_gpuinfer.probes.errors import InputError

torch = pytest.importorskip("torch")

# Every check below fails before the model runs, so a bare linear layer stands in for one.
MODEL = torch.nn.Linear(2, 2)
IDS = torch.tensor([[1, 0]])
NAN = float("nan")

# (id, call, text the one-line message must contain)
BAD_INPUTS: list[tuple[str, Callable[[], object], str | tuple[str, ...]]] = [
    # assert_memory_footprint
    (
        "footprint-ratio-by-position",
        lambda: assert_memory_footprint(MODEL, MODEL, "2"),  # type: ignore[misc, arg-type]
        "'2' passed by position; only reference, candidate go by position, tolerances and "
        "options by keyword: write min_ratio='2'",
    ),
    (
        "footprint-ratio-str",
        lambda: assert_memory_footprint(MODEL, MODEL, min_ratio="2"),  # type: ignore[arg-type]
        "min_ratio='2': expected a number > 0",
    ),
    (
        "footprint-ratio-zero",
        lambda: assert_memory_footprint(MODEL, MODEL, min_ratio=0),
        "min_ratio=0: expected a number > 0",
    ),
    (
        "footprint-ratio-negative",
        lambda: assert_memory_footprint(MODEL, MODEL, min_ratio=-1.5),
        "min_ratio=-1.5: expected",
    ),
    (
        "footprint-ratio-nan",
        lambda: assert_memory_footprint(MODEL, MODEL, min_ratio=NAN),
        "min_ratio=nan: expected",
    ),
    (
        "footprint-ratio-bool",
        lambda: assert_memory_footprint(MODEL, MODEL, min_ratio=True),
        "min_ratio=True: expected",
    ),
    (
        "footprint-ratio-none",
        lambda: assert_memory_footprint(MODEL, MODEL, min_ratio=None),  # type: ignore[arg-type]
        "min_ratio=None: expected",
    ),
    (
        "footprint-ratio-missing",
        lambda: assert_memory_footprint(MODEL, MODEL),  # type: ignore[call-arg]
        # Python words this one itself, and 3.12 words it differently from 3.11 ("missing a
        # required keyword-only argument"): only the function and the argument are ours.
        ("assert_memory_footprint: ", "'min_ratio'"),
    ),
    (
        "footprint-unknown-keyword",
        lambda: assert_memory_footprint(MODEL, MODEL, min_ratio=1.5, rtol=0.1),  # type: ignore[call-arg]
        "unexpected keyword argument 'rtol'",
    ),
    (
        "footprint-reference-not-a-model",
        lambda: assert_memory_footprint("gpt2", MODEL, min_ratio=1.5),
        "reference='gpt2': expected a torch model, a (model, tokenizer) pair or a LoadedModel",
    ),
    (
        "footprint-candidate-none",
        lambda: assert_memory_footprint(MODEL, None, min_ratio=1.5),
        "candidate=None: expected a torch model",
    ),
    # assert_on_device
    (
        "on-device-not-a-model",
        lambda: assert_on_device("cuda:0", IDS),
        "model='cuda:0': expected a torch model",
    ),
    (
        "on-device-no-tensors",
        lambda: assert_on_device(MODEL, {"text": "hi"}),
        "inputs hold no tensors (got dict)",
    ),
    (
        "on-device-extra-argument",
        lambda: assert_on_device(MODEL, IDS, "cpu"),  # type: ignore[call-arg]
        "'cpu' passed by position; only model, inputs go by position",
    ),
    # assert_device_map
    (
        "device-map-bad-device",
        lambda: assert_device_map(MODEL, {"": "gpu0"}),
        "device 'gpu0' is not a device",
    ),
    (
        "device-map-float-device",
        lambda: assert_device_map(MODEL, 1.5),  # type: ignore[arg-type]
        "device 1.5 is not a device",
    ),
    (
        "device-map-bool-device",
        lambda: assert_device_map(MODEL, True),
        "device True is not a device",
    ),
    (
        "device-map-int-key",
        lambda: assert_device_map(MODEL, {0: "cpu"}),  # type: ignore[dict-item]
        "device map key 0: expected a module name prefix",
    ),
    ("device-map-empty", lambda: assert_device_map(MODEL, {}), "expected device map is empty"),
    ("device-map-not-a-model", lambda: assert_device_map([MODEL], "cpu"), "model=[Linear("),
    # assert_quantized
    (
        "quantized-bits-str",
        lambda: assert_quantized(MODEL, bits="8"),  # type: ignore[arg-type]
        "bits='8': expected 8 (int8) or 4 (nf4)",
    ),
    (
        "quantized-bits-3",
        lambda: assert_quantized(MODEL, bits=3),
        "bits=3: expected 8 (int8) or 4 (nf4)",
    ),
    ("quantized-bits-bool", lambda: assert_quantized(MODEL, bits=True), "bits=True: expected"),
    (
        "quantized-bits-by-position",
        lambda: assert_quantized(MODEL, 4),  # type: ignore[misc]
        "4 passed by position; only model go by position, tolerances and options by keyword: "
        "write bits=4",
    ),
    ("quantized-not-a-model", lambda: assert_quantized(object()), "model=<object object at"),
    # assert_generation_close
    (
        "generation-prompts-int",
        lambda: assert_generation_close(MODEL, MODEL, 42),  # type: ignore[arg-type]
        "prompts=42: expected a string or a list of strings",
    ),
    (
        "generation-prompts-empty",
        lambda: assert_generation_close(MODEL, MODEL, []),
        "prompts is empty",
    ),
    (
        "generation-prompts-mixed",
        lambda: assert_generation_close(MODEL, MODEL, ["a", 3]),  # type: ignore[list-item]
        "prompts=['a', 3]: expected a string or a list of strings",
    ),
    (
        "generation-prompts-bytes",
        lambda: assert_generation_close(MODEL, MODEL, b"hi"),  # type: ignore[arg-type]
        "prompts=b'hi': expected",
    ),
    (
        "generation-max-new-tokens-zero",
        lambda: assert_generation_close(MODEL, MODEL, "hi", max_new_tokens=0),
        "max_new_tokens=0: expected an integer >= 1",
    ),
    (
        "generation-max-new-tokens-str",
        lambda: assert_generation_close(MODEL, MODEL, "hi", max_new_tokens="16"),  # type: ignore[arg-type]
        "max_new_tokens='16': expected an integer >= 1",
    ),
    (
        "generation-max-new-tokens-float",
        lambda: assert_generation_close(MODEL, MODEL, "hi", max_new_tokens=2.5),  # type: ignore[arg-type]
        "max_new_tokens=2.5: expected an integer >= 1",
    ),
    (
        "generation-top-k-zero",
        lambda: assert_generation_close(MODEL, MODEL, "hi", top_k=0),
        "top_k=0: expected an integer >= 1",
    ),
    (
        "generation-top-k-none",
        lambda: assert_generation_close(MODEL, MODEL, "hi", top_k=None),  # type: ignore[arg-type]
        "top_k=None: expected an integer >= 1",
    ),
    (
        "generation-generate-kwargs-list",
        lambda: assert_generation_close(MODEL, MODEL, "hi", generate_kwargs=["do_sample"]),  # type: ignore[arg-type]
        "generate_kwargs=['do_sample']: expected a mapping",
    ),
    (
        "generation-tokenizer-str",
        lambda: assert_generation_close(MODEL, MODEL, "hi", tokenizer="gpt2"),
        "tokenizer='gpt2': expected a Hugging Face tokenizer",
    ),
    (
        "generation-options-by-position",
        lambda: assert_generation_close(MODEL, MODEL, "hi", 8, 3),  # type: ignore[misc]
        "8, 3 passed by position; only reference, candidate, prompts go by position, "
        "tolerances and options by keyword: write max_new_tokens=8, top_k=3",
    ),
    (
        "generation-not-a-model",
        lambda: assert_generation_close(MODEL, "gpt2", "hi"),
        "candidate='gpt2': expected a torch model",
    ),
    # assert_logits_close
    (
        "logits-mode-unknown",
        lambda: assert_logits_close(MODEL, MODEL, IDS, mode="fp8"),
        f"mode='fp8': expected one of {', '.join(modes.MODES)}",
    ),
    (
        "logits-mode-int",
        lambda: assert_logits_close(MODEL, MODEL, IDS, mode=16),  # type: ignore[arg-type]
        "mode=16: expected one of",
    ),
    (
        "logits-mode-list",
        lambda: assert_logits_close(MODEL, MODEL, IDS, mode=["fp16"]),  # type: ignore[arg-type]
        "mode=['fp16']: expected one of",
    ),
    (
        "logits-tolerance-str",
        lambda: assert_logits_close(MODEL, MODEL, IDS, tolerance="tight"),  # type: ignore[arg-type]
        "tolerance='tight': expected a LogitsTolerance or None",
    ),
    (
        "logits-tolerance-out-of-range",
        lambda: assert_logits_close(MODEL, MODEL, IDS, tolerance=LogitsTolerance(1.5, 1, 1, 0)),
        "tolerance.min_top1_agreement=1.5: expected a number >= 0 and <= 1",
    ),
    (
        "logits-tolerance-negative-field",
        lambda: assert_logits_close(MODEL, MODEL, IDS, tolerance=LogitsTolerance(0.9, 1, -0.1, 0)),
        "tolerance.mean_abs_error=-0.1: expected a number >= 0",
    ),
    (
        "logits-top1-negative",
        lambda: assert_logits_close(MODEL, MODEL, IDS, mode="fp32", min_top1_agreement=-0.1),
        "min_top1_agreement=-0.1: expected a number >= 0 and <= 1",
    ),
    (
        "logits-max-error-str",
        lambda: assert_logits_close(MODEL, MODEL, IDS, mode="fp32", max_abs_error="0.1"),  # type: ignore[arg-type]
        "max_abs_error='0.1': expected a number >= 0",
    ),
    (
        "logits-mean-error-nan",
        lambda: assert_logits_close(MODEL, MODEL, IDS, mode="fp32", mean_abs_error=NAN),
        "mean_abs_error=nan: expected a number >= 0",
    ),
    (
        "logits-tie-margin-negative",
        lambda: assert_logits_close(MODEL, MODEL, IDS, mode="fp32", tie_margin=-1),
        "tie_margin=-1: expected a number >= 0",
    ),
    (
        "logits-no-mode-no-bounds",
        lambda: assert_logits_close(MODEL, MODEL, IDS, max_abs_error=1.0),
        "cannot tell the candidate's mode: pass mode=, tolerance= or all of min_top1_agreement",
    ),
    (
        "logits-inputs-int",
        lambda: assert_logits_close(MODEL, MODEL, 42, mode="fp32"),
        "inputs=42: expected a string, a list of strings, a tokenized mapping or a tensor",
    ),
    (
        "logits-inputs-mapping-without-ids",
        lambda: assert_logits_close(MODEL, MODEL, {"ids": IDS}, mode="fp32"),
        "inputs mapping has no 'input_ids'",
    ),
    (
        "logits-text-without-tokenizer",
        lambda: assert_logits_close(MODEL, MODEL, "hi", mode="fp32"),
        "text inputs needs a tokenizer",
    ),
    (
        "logits-mode-by-position",
        lambda: assert_logits_close(MODEL, MODEL, IDS, "fp16"),  # type: ignore[misc]
        "'fp16' passed by position; only reference, candidate, inputs go by position, "
        "tolerances and options by keyword: write mode='fp16'",
    ),
    (
        "logits-reference-one-tuple",
        lambda: assert_logits_close((MODEL,), MODEL, IDS, mode="fp32"),
        "reference=(Linear(in_features=2, out_features=2, bias=True),): expected a torch model",
    ),
    # assert_embeddings_close
    (
        "embeddings-min-cosine-str",
        lambda: assert_embeddings_close(MODEL, MODEL, "t", min_cosine="high"),  # type: ignore[arg-type]
        "min_cosine='high': expected a number >= -1 and <= 1",
    ),
    (
        "embeddings-min-cosine-above-one",
        lambda: assert_embeddings_close(MODEL, MODEL, "t", min_cosine=1.5),
        "min_cosine=1.5: expected a number >= -1 and <= 1",
    ),
    (
        "embeddings-min-cosine-by-position",
        lambda: assert_embeddings_close(MODEL, MODEL, "t", 0.99),  # type: ignore[misc]
        "0.99 passed by position; only reference, candidate, texts go by position, "
        "tolerances and options by keyword: write min_cosine=0.99",
    ),
    (
        "embeddings-pooling",
        lambda: assert_embeddings_close(MODEL, MODEL, "t", pooling="max"),
        "pooling='max': expected 'mean' or 'cls'",
    ),
    (
        "embeddings-texts-none",
        lambda: assert_embeddings_close(MODEL, MODEL, None),  # type: ignore[arg-type]
        "texts=None: expected a string or a list of strings",
    ),
    ("embeddings-texts-empty", lambda: assert_embeddings_close(MODEL, MODEL, ()), "texts is empty"),
    (
        "embeddings-tokenizer-int",
        lambda: assert_embeddings_close(MODEL, MODEL, "t", tokenizer=3),
        "tokenizer=3: expected a Hugging Face tokenizer",
    ),
    (
        "embeddings-no-tokenizer",
        lambda: assert_embeddings_close(MODEL, MODEL, "t"),
        "assert_embeddings_close needs a tokenizer",
    ),
]


@pytest.mark.parametrize(
    ("call", "expected"),
    [pytest.param(call, expected, id=name) for name, call, expected in BAD_INPUTS],
)
def test_bad_argument_is_one_input_error_line(
    call: Callable[[], object], expected: str | tuple[str, ...]
) -> None:
    with pytest.raises(InputError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    for part in (expected,) if isinstance(expected, str) else expected:
        assert part in message


def test_the_table_covers_every_assertion() -> None:
    called = {name.split("-")[0] for name, _, _ in BAD_INPUTS}
    assert called == {
        "footprint",
        "on",
        "device",
        "quantized",
        "generation",
        "logits",
        "embeddings",
    }
    assert len(BAD_INPUTS) >= 50


@pytest.mark.parametrize(
    ("function", "by_position"),
    [
        (assert_on_device, ["model", "inputs"]),
        (assert_device_map, ["model", "expected"]),
        (assert_quantized, ["model"]),
        (assert_memory_footprint, ["reference", "candidate"]),
        (assert_generation_close, ["reference", "candidate", "prompts"]),
        (assert_logits_close, ["reference", "candidate", "inputs"]),
        (assert_embeddings_close, ["reference", "candidate", "texts"]),
    ],
)
def test_tolerances_and_options_are_keyword_only(
    function: Callable[..., object], by_position: list[str]
) -> None:
    parameters = inspect.signature(function).parameters.values()
    positional = [p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == by_position
    assert all(p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in parameters)
    assert "reference first" in (function.__doc__ or "").lower() or by_position[0] == "model"


def test_mode_facts_come_from_probes_modes() -> None:
    assert assertions.LogitsTolerance is modes.LogitsTolerance
    assert assertions.DEFAULT_TOLERANCES is modes.DEFAULT_TOLERANCES
    assert set(assertions.DEFAULT_TOLERANCES) == set(modes.MODES)

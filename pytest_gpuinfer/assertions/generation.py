"""Generation assertion: greedy continuations agree, or part only between near-ties."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_gpuinfer.assertions._shared import (
    check_int,
    check_texts,
    checked_call,
    model_device,
    require_tokenizer,
    shown,
    to_device,
    token_text,
    unpack,
)
from pytest_gpuinfer.probes.errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = ["GenerationComparison", "assert_generation_close"]


@dataclass(frozen=True)
class GenerationComparison:
    """One prompt's greedy generations; ``first_divergence`` is None when they match."""

    prompt: str
    reference_text: str
    candidate_text: str
    first_divergence: int | None
    reference_tokens: tuple[int, ...] = ()
    candidate_tokens: tuple[int, ...] = ()


@dataclass(frozen=True)
class _Generation:
    tokens: list[int]
    logprobs: list[torch.Tensor]  # per new token, float32 on CPU, shape (vocab,)


def _generate(
    model: Any,
    tokenizer: Any,
    prompt: str,
    max_new_tokens: int,
    generate_kwargs: Mapping[str, Any],
) -> _Generation:
    import torch

    encoded = tokenizer(prompt, return_tensors="pt")
    inputs = to_device(dict(encoded), model_device(model))
    prompt_length = inputs["input_ids"].shape[-1]
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": False,
        "num_beams": 1,
        "return_dict_in_generate": True,
        "output_logits": True,
        "output_scores": True,
    }
    generation_config = getattr(model, "generation_config", None)
    if getattr(generation_config, "pad_token_id", None) is None:
        pad = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        if pad is not None:
            kwargs["pad_token_id"] = pad
    kwargs.update(generate_kwargs)
    with torch.no_grad():
        output = model.generate(**inputs, **kwargs)
    # Raw logits where the transformers version offers them; processed scores otherwise.
    steps = getattr(output, "logits", None) or output.scores
    tokens = [int(token) for token in output.sequences[0, prompt_length:]]
    logprobs = [torch.log_softmax(step[0].float().cpu(), dim=-1) for step in steps]
    return _Generation(tokens, logprobs)


_GREEDY_VALUES: dict[str, object] = {"do_sample": False, "num_beams": 1, "num_beam_groups": 1}
_NOT_GREEDY: dict[str, str] = {
    "do_sample": "the comparison is defined on greedy generation: do_sample must stay False",
    "num_beams": "the comparison is defined on greedy generation: num_beams must stay 1",
    "num_beam_groups": "the comparison is greedy: num_beam_groups must stay 1",
    "penalty_alpha": "contrastive search is not greedy generation: leave penalty_alpha out",
    "max_new_tokens": "give max_new_tokens= to assert_generation_close itself",
    "return_dict_in_generate": "the comparison sets it: it reads the per-step logits",
    "output_logits": "the comparison sets it: it reads the per-step logits",
    "output_scores": "the comparison sets it: it reads the per-step logits",
}
"""generate() keywords that would change what is compared, and why each is refused."""


def _top_k(logprobs: torch.Tensor, k: int) -> list[tuple[int, float]]:
    values, indices = logprobs.topk(min(k, logprobs.shape[-1]))
    return [(int(index), float(value)) for value, index in zip(values, indices, strict=True)]


@checked_call
def assert_generation_close(
    reference: object,
    candidate: object,
    prompts: str | Sequence[str],
    *,
    max_new_tokens: int = 16,
    top_k: int = 5,
    tokenizer: Any = None,
    generate_kwargs: Mapping[str, Any] | None = None,
) -> list[GenerationComparison]:
    """Greedy generations of both models agree, or diverge only between near-ties.

    Reference first, then the candidate (``torch.testing.assert_close`` takes the actual
    value first); everything after ``prompts`` is keyword-only. Each prompt is generated
    greedily (batch 1, inputs moved to each model's device). Equal tokens pass. At the first
    differing token, each side's token must be among the other side's ``top_k``
    log-probabilities at that step; comparison of that prompt stops there (after a
    divergence the two continuations condition on different text). The tokenizer is
    ``tokenizer=``, else the candidate's, else the reference's.
    """
    __tracebackhide__ = True
    prompts = check_texts("prompts", prompts)
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, minimum=1)
    top_k = check_int("top_k", top_k, minimum=1)
    if generate_kwargs is not None and not isinstance(generate_kwargs, Mapping):
        raise InputError(
            f"generate_kwargs={shown(generate_kwargs)}: expected a mapping of generate() "
            "keyword arguments or None"
        )
    for key, value in (generate_kwargs or {}).items():
        why = _NOT_GREEDY.get(key)
        if why is not None and value != _GREEDY_VALUES.get(key, object()):
            raise InputError(f"generate_kwargs={{{key!r}: {shown(value)}}}: {why}")
    reference_model, reference_tokenizer = unpack(reference, tokenizer, what="reference")
    candidate_model, candidate_tokenizer = unpack(candidate, tokenizer, what="candidate")
    tok = require_tokenizer(
        candidate_tokenizer if candidate_tokenizer is not None else reference_tokenizer,
        "assert_generation_close",
    )
    extra = dict(generate_kwargs or {})

    comparisons: list[GenerationComparison] = []
    failures: list[str] = []
    for index, prompt in enumerate(prompts):
        ref = _generate(reference_model, tok, prompt, max_new_tokens, extra)
        cand = _generate(candidate_model, tok, prompt, max_new_tokens, extra)
        divergence = next(
            (i for i, (a, b) in enumerate(zip(ref.tokens, cand.tokens, strict=False)) if a != b),
            None,
        )
        if divergence is None and len(ref.tokens) != len(cand.tokens):
            divergence = min(len(ref.tokens), len(cand.tokens))
        comparisons.append(
            GenerationComparison(
                prompt,
                tok.decode(ref.tokens),
                tok.decode(cand.tokens),
                divergence,
                tuple(ref.tokens),
                tuple(cand.tokens),
            )
        )
        if divergence is None:
            continue
        problem = _divergence_problem(ref, cand, divergence, top_k)
        if problem is not None:
            failures.append(
                _describe_divergence(
                    tok, index, len(prompts), prompt, ref, cand, divergence, top_k, problem
                )
            )
    if failures:
        raise AssertionError("\n\n".join(failures))
    return comparisons


def _divergence_problem(ref: _Generation, cand: _Generation, at: int, top_k: int) -> str | None:
    if at >= len(ref.tokens) or at >= len(cand.tokens):
        shorter = "reference" if len(ref.tokens) < len(cand.tokens) else "candidate"
        return f"the {shorter} stopped after {at} new tokens while the other went on"
    ref_token, cand_token = ref.tokens[at], cand.tokens[at]
    problems = []
    if cand_token not in {token for token, _ in _top_k(ref.logprobs[at], top_k)}:
        problems.append(f"the candidate's token is not in the reference's top-{top_k}")
    if ref_token not in {token for token, _ in _top_k(cand.logprobs[at], top_k)}:
        problems.append(f"the reference's token is not in the candidate's top-{top_k}")
    return "; ".join(problems) or None


def _describe_divergence(
    tokenizer: Any,
    index: int,
    count: int,
    prompt: str,
    ref: _Generation,
    cand: _Generation,
    at: int,
    top_k: int,
    problem: str,
) -> str:
    def side(name: str, generation: _Generation) -> list[str]:
        head = tokenizer.decode(generation.tokens[:at])
        tail = tokenizer.decode(generation.tokens[at:])
        lines = [f"  {name}: {head!r} | {tail!r}"]
        if at < len(generation.tokens):
            token = generation.tokens[at]
            logprob = float(generation.logprobs[at][token])
            lines.append(f"    token {token_text(tokenizer, token)} (logprob {logprob:.3f})")
            ranked = ", ".join(
                f"{token_text(tokenizer, t)} {lp:.3f}"
                for t, lp in _top_k(generation.logprobs[at], top_k)
            )
            lines.append(f"    top-{top_k}: {ranked}")
        else:
            lines.append("    (ended here)")
        return lines

    return "\n".join(
        [
            f"generations diverge at new token {at} for prompt {index + 1} of {count}: {prompt!r}",
            f"  {problem}",
            *side("reference", ref),
            *side("candidate", cand),
        ]
    )

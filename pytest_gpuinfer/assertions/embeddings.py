"""Embeddings assertion: two encoders' sentence embeddings point the same way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pytest_gpuinfer.assertions._shared import (
    cap,
    check_number,
    check_texts,
    checked_call,
    model_device,
    require_tokenizer,
    shown,
    to_device,
    unpack,
)
from pytest_gpuinfer.probes.errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = ["assert_embeddings_close"]

_POOLINGS = ("mean", "cls")


def _embed(model: Any, tokenizer: Any, text: str, pooling: str) -> torch.Tensor:
    import torch

    encoded = tokenizer(text, return_tensors="pt")
    inputs = to_device(dict(encoded), model_device(model))
    encoder = model.get_encoder() if getattr(model.config, "is_encoder_decoder", False) else model
    with torch.no_grad():
        output = encoder(**inputs, output_hidden_states=True)
    hidden = getattr(output, "last_hidden_state", None)
    if hidden is None:
        hidden = output.hidden_states[-1]
    hidden = hidden.float().cpu()[0]  # (positions, width)
    if pooling == "cls":
        return hidden[0]  # type: ignore[no-any-return]
    mask = inputs.get("attention_mask")
    weights = (
        mask.float().cpu()[0][:, None]
        if isinstance(mask, torch.Tensor)
        else torch.ones(hidden.shape[0], 1)
    )
    return (hidden * weights).sum(dim=0) / weights.sum().clamp(min=1.0)  # type: ignore[no-any-return]


@checked_call
def assert_embeddings_close(
    reference: object,
    candidate: object,
    texts: str | Sequence[str],
    *,
    min_cosine: float = 0.999,
    tokenizer: Any = None,
    pooling: str = "mean",
) -> list[float]:
    """Sentence embeddings of both encoders have cosine similarity >= ``min_cosine`` per text.

    Reference first, then the candidate (``torch.testing.assert_close`` takes the actual
    value first); everything after ``texts`` is keyword-only. The embedding is the last
    hidden state, mean-pooled over the attention mask (``pooling="mean"``) or the first
    token's (``pooling="cls"``); encoder-decoder models use their encoder. Returns the
    cosine per text.
    """
    __tracebackhide__ = True
    import torch

    if pooling not in _POOLINGS:
        raise InputError(f"pooling={shown(pooling)}: expected 'mean' or 'cls'")
    min_cosine = check_number("min_cosine", min_cosine, minimum=-1.0, maximum=1.0)
    texts = check_texts("texts", texts)
    reference_model, reference_tokenizer = unpack(reference, tokenizer, what="reference")
    candidate_model, candidate_tokenizer = unpack(candidate, tokenizer, what="candidate")
    tok = require_tokenizer(
        candidate_tokenizer if candidate_tokenizer is not None else reference_tokenizer,
        "assert_embeddings_close",
    )
    cosines: list[float] = []
    for text in texts:
        a = _embed(reference_model, tok, text, pooling)
        b = _embed(candidate_model, tok, text, pooling)
        cosines.append(float(torch.nn.functional.cosine_similarity(a, b, dim=0)))
    low = [
        (text, cosine) for text, cosine in zip(texts, cosines, strict=True) if cosine < min_cosine
    ]
    if low:
        lines = [f"  {cosine:.6f}  {text!r}" for text, cosine in low]
        raise AssertionError(
            "\n".join(
                [
                    f"{len(low)} of {len(texts)} embeddings have cosine < {min_cosine} "
                    f"({pooling} pooling; lowest {min(cosines):.6f}):",
                    *cap(lines),
                ]
            )
        )
    return cosines

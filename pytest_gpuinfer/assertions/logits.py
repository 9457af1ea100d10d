"""Logits assertion: log-probabilities of one forward pass agree within a mode's tolerance."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_gpuinfer.assertions._shared import (
    check_number,
    checked_call,
    loaded_quantized_mode,
    model_device,
    require_tokenizer,
    shown,
    to_device,
    unpack,
)
from pytest_gpuinfer.probes.errors import InputError
from pytest_gpuinfer.probes.modes import (
    DEFAULT_TOLERANCES,
    MODE_INFO,
    MODES,
    LogitsTolerance,
    mode_for_dtype,
)

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_TOLERANCES", "LogitsComparison", "LogitsTolerance", "assert_logits_close"]

# Each bound's valid range: (lowest, highest); None is open.
_BOUNDS: Mapping[str, tuple[float, float | None]] = {
    "min_top1_agreement": (0.0, 1.0),
    "max_abs_error": (0.0, None),
    "mean_abs_error": (0.0, None),
    "tie_margin": (0.0, None),
}


@dataclass(frozen=True)
class LogitsComparison:
    """What ``assert_logits_close`` measured over all compared positions.

    ``top1_agreement`` forgives near-ties: a position agrees when both argmaxes match or
    the reference scores the candidate's argmax within ``tie_margin`` of its own best.
    ``exact_top1_agreement`` does not.
    """

    positions: int
    top1_agreement: float
    exact_top1_agreement: float
    max_abs_error: float
    mean_abs_error: float
    worst_position: tuple[int, int]
    tolerance: LogitsTolerance
    mode: str | None


def _infer_mode(candidate: object, model: Any) -> str | None:
    mode = getattr(candidate, "mode", None)
    if isinstance(mode, str) and mode in MODE_INFO:
        return mode
    quantized = loaded_quantized_mode(model)
    if quantized is not None:
        return quantized
    return mode_for_dtype(str(getattr(model, "dtype", "")))


def _tolerance(
    mode: str | None, tolerance: object, overrides: Mapping[str, object]
) -> LogitsTolerance:
    """The bounds to apply: ``tolerance=`` or the mode's defaults, with single overrides."""
    if tolerance is not None and not isinstance(tolerance, LogitsTolerance):
        raise InputError(f"tolerance={shown(tolerance)}: expected a LogitsTolerance or None")
    base = tolerance if tolerance is not None else DEFAULT_TOLERANCES.get(mode or "")
    if base is None and any(value is None for value in overrides.values()):
        raise InputError(
            "cannot tell the candidate's mode: pass mode=, tolerance= or all of "
            f"{', '.join(overrides)}"
        )
    values = {
        name: value if value is not None else getattr(base, name)
        for name, value in overrides.items()
    }
    checked = {}
    for name, value in values.items():
        lowest, highest = _BOUNDS[name]
        where = "tolerance." if overrides[name] is None else ""
        checked[name] = check_number(f"{where}{name}", value, minimum=lowest, maximum=highest)
    return LogitsTolerance(**checked)


def _batches(inputs: object, tokenizer: Any) -> list[dict[str, Any]]:
    import torch

    if isinstance(inputs, str):
        inputs = [inputs]
    if isinstance(inputs, torch.Tensor):
        return [{"input_ids": inputs if inputs.dim() > 1 else inputs.unsqueeze(0)}]
    if isinstance(inputs, Mapping):
        if "input_ids" not in inputs and "inputs_embeds" not in inputs:
            raise InputError("inputs mapping has no 'input_ids'")
        return [dict(inputs)]
    if isinstance(inputs, Sequence) and inputs and all(isinstance(t, str) for t in inputs):
        tok = require_tokenizer(tokenizer, "text inputs")
        # One text at a time: no padding, so no pad token needed and no padded positions.
        return [dict(tok(text, return_tensors="pt")) for text in inputs]
    raise InputError(
        f"inputs={shown(inputs)}: expected a string, a list of strings, a tokenized mapping "
        "or a tensor of input ids"
    )


def _forward_logits(model: Any, batch: Mapping[str, Any]) -> torch.Tensor:
    import torch

    with torch.no_grad():
        output = model(**to_device(batch, model_device(model)))
    logits = output.logits if hasattr(output, "logits") else output[0]
    return logits.float().cpu()  # type: ignore[no-any-return]


@checked_call
def assert_logits_close(
    reference: object,
    candidate: object,
    inputs: object,
    *,
    mode: str | None = None,
    tolerance: LogitsTolerance | None = None,
    min_top1_agreement: float | None = None,
    max_abs_error: float | None = None,
    mean_abs_error: float | None = None,
    tie_margin: float | None = None,
    tokenizer: Any = None,
) -> LogitsComparison:
    """One forward pass on both; compare log-softmax of the logits position by position.

    Reference first, then the candidate (``torch.testing.assert_close`` takes the actual
    value first); everything after ``inputs`` is keyword-only. Log-probabilities rather
    than raw logits: softmax ignores a constant shift, so a shift is not an error. Checks
    top-1 agreement (near-ties forgiven, see ``LogitsComparison``), the largest and the
    mean absolute log-probability error over every vocabulary entry of every unmasked
    position. Bounds come from ``tolerance=``, else ``DEFAULT_TOLERANCES[mode]``; each
    single bound passed overrides it. ``mode`` defaults to the candidate's
    (``LoadedModel.mode``, else int8 / nf4 / its dtype). ``inputs``: text(s) (tokenized one
    at a time), a tokenized mapping, or input ids.
    """
    __tracebackhide__ = True
    import torch

    if mode is not None and (not isinstance(mode, str) or mode not in MODE_INFO):
        raise InputError(f"mode={shown(mode)}: expected one of {', '.join(MODES)}")
    reference_model, reference_tokenizer = unpack(reference, tokenizer, what="reference")
    candidate_model, candidate_tokenizer = unpack(candidate, tokenizer, what="candidate")
    if mode is None:
        mode = _infer_mode(candidate, candidate_model)
    overrides = {
        "min_top1_agreement": min_top1_agreement,
        "max_abs_error": max_abs_error,
        "mean_abs_error": mean_abs_error,
        "tie_margin": tie_margin,
    }
    explicit = tolerance is not None or any(value is not None for value in overrides.values())
    label = "explicit" if explicit else mode
    tolerance = _tolerance(mode, tolerance, overrides)
    batches = _batches(
        inputs, candidate_tokenizer if candidate_tokenizer is not None else reference_tokenizer
    )
    errors_sum = 0.0
    error_count = 0
    positions = 0
    exact = 0
    agreeing = 0
    worst = (-1.0, (0, 0))
    for batch_index, batch in enumerate(batches):
        ref_logprobs = torch.log_softmax(_forward_logits(reference_model, batch), dim=-1)
        cand_logprobs = torch.log_softmax(_forward_logits(candidate_model, batch), dim=-1)
        if ref_logprobs.shape != cand_logprobs.shape:
            raise AssertionError(
                f"logits shapes differ: reference {tuple(ref_logprobs.shape)}, "
                f"candidate {tuple(cand_logprobs.shape)}"
            )
        mask = batch.get("attention_mask")
        keep = (
            mask.cpu().bool()
            if isinstance(mask, torch.Tensor)
            else torch.ones(ref_logprobs.shape[:-1], dtype=torch.bool)
        )
        ref_kept, cand_kept = ref_logprobs[keep], cand_logprobs[keep]  # (positions, vocab)
        error = (ref_kept - cand_kept).abs()
        errors_sum += float(error.sum(dtype=torch.float64))
        error_count += error.numel()
        per_position = error.max(dim=-1).values
        if per_position.numel() and float(per_position.max()) > worst[0]:
            flat = int(per_position.argmax())
            batch_row, column = keep.nonzero()[flat].tolist()
            worst = (float(per_position.max()), (batch_index + batch_row, column))
        ref_best = ref_kept.argmax(dim=-1)
        cand_best = cand_kept.argmax(dim=-1)
        gap = ref_kept.max(dim=-1).values - ref_kept.gather(-1, cand_best[:, None])[:, 0]
        exact += int((ref_best == cand_best).sum())
        agreeing += int(((ref_best == cand_best) | (gap <= tolerance.tie_margin)).sum())
        positions += int(keep.sum())
    if positions == 0:
        raise InputError("inputs have no unmasked positions to compare")

    result = LogitsComparison(
        positions=positions,
        top1_agreement=agreeing / positions,
        exact_top1_agreement=exact / positions,
        max_abs_error=worst[0],
        mean_abs_error=errors_sum / error_count,
        worst_position=worst[1],
        tolerance=tolerance,
        mode=mode,
    )
    problems = []
    if result.top1_agreement < tolerance.min_top1_agreement:
        problems.append(
            f"top-1 agreement {result.top1_agreement:.3f} < {tolerance.min_top1_agreement}"
        )
    if result.max_abs_error > tolerance.max_abs_error:
        problems.append(
            f"max abs logprob error {result.max_abs_error:.4g} > {tolerance.max_abs_error}"
        )
    if result.mean_abs_error > tolerance.mean_abs_error:
        problems.append(
            f"mean abs logprob error {result.mean_abs_error:.4g} > {tolerance.mean_abs_error}"
        )
    if problems:
        raise AssertionError(
            f"logits not close ({label} tolerances): {'; '.join(problems)}\n"
            f"  {positions} positions; top-1 agreement {result.top1_agreement:.3f} "
            f"(exact {result.exact_top1_agreement:.3f}, ties within {tolerance.tie_margin} "
            f"forgiven); max abs error {result.max_abs_error:.4g} at input "
            f"{result.worst_position[0]} position {result.worst_position[1]}; "
            f"mean abs error {result.mean_abs_error:.4g}"
        )
    return result

"""Quantization assertions: bitsandbytes layers where transformers puts them, memory saved."""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from typing import Any

from pytest_gpuinfer.assertions._shared import (
    cap,
    check_number,
    checked_call,
    loaded_quantized_mode,
    shown,
    unpack,
)
from pytest_gpuinfer.probes.bnb_modules import kept_in_full_precision, module_matches
from pytest_gpuinfer.probes.errors import InputError
from pytest_gpuinfer.probes.memory_units import format_bytes
from pytest_gpuinfer.probes.modes import MODE_INFO

__all__ = ["assert_memory_footprint", "assert_quantized"]


def _skip_patterns(model: Any) -> set[str]:
    """Module names transformers keeps in full precision when it quantizes ``model``."""
    config = getattr(model, "config", None)
    quantization_config = getattr(config, "quantization_config", None)

    def setting(key: str) -> Any:
        if isinstance(quantization_config, Mapping):
            return quantization_config.get(key)
        return getattr(quantization_config, key, None)

    patterns: set[str] = set()
    skip_modules = setting("llm_int8_skip_modules")
    if skip_modules is not None:
        patterns.update(skip_modules)
    else:
        patterns.update(kept_in_full_precision(model))
    patterns.update(getattr(model, "_keep_in_fp32_modules", None) or ())
    quantizer = getattr(model, "hf_quantizer", None)
    patterns.update(getattr(quantizer, "modules_to_not_convert", None) or ())
    device_map = getattr(model, "hf_device_map", None)
    if setting("llm_int8_enable_fp32_cpu_offload") and isinstance(device_map, Mapping):
        patterns.update(key for key, value in device_map.items() if value in ("cpu", "disk"))
    return patterns


def _check_bits(bits: object) -> int:
    """``bits`` as the bit width of a quantized mode (MODE_INFO), or InputError."""
    widths = {mode.bits: mode.name for mode in MODE_INFO.values() if mode.bits is not None}
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in widths:
        expected = " or ".join(f"{width} ({name})" for width, name in widths.items())
        raise InputError(f"bits={shown(bits)}: expected {expected}")
    return bits


@checked_call
def assert_quantized(model: object, *, bits: int = 8) -> None:
    """Every eligible linear layer is a bitsandbytes layer holding quantized weights.

    ``bits=8``: ``Linear8bitLt`` with an ``Int8Params`` int8 weight (LLM.int8).
    ``bits=4``: ``Linear4bit`` with a quantized ``Params4bit`` weight (nf4 / fp4).
    Eligible means every ``nn.Linear`` (and GPT-2's ``Conv1D``) except the modules
    transformers keeps in full precision: ``llm_int8_skip_modules`` if set, otherwise the
    output embeddings (lm_head), tied weights and the last module; plus
    ``_keep_in_fp32_modules``.
    """
    __tracebackhide__ = True
    import torch

    bits = _check_bits(bits)
    net: Any = unpack(model)[0]
    try:
        bnb: Any = importlib.import_module("bitsandbytes")
    except ImportError as error:
        raise AssertionError(
            "bitsandbytes is not installed, so the model cannot be quantized"
        ) from error
    try:
        from transformers.pytorch_utils import Conv1D

        linear_types: tuple[type, ...] = (torch.nn.Linear, Conv1D)
    except ImportError:
        linear_types = (torch.nn.Linear,)
    bnb_types = (bnb.nn.Linear8bitLt, bnb.nn.Linear4bit)
    wanted = "Linear8bitLt with int8 Int8Params" if bits == 8 else "Linear4bit with Params4bit"

    patterns = _skip_patterns(net)
    eligible = 0
    skipped: list[str] = []
    offending: list[str] = []
    for name, module in net.named_modules():
        if not isinstance(module, (*linear_types, *bnb_types)):
            continue
        if module_matches(name, patterns):
            skipped.append(name)
            continue
        eligible += 1
        problem = _quantization_problem(module, bits, bnb)
        if problem:
            offending.append(f"  {name}: {problem}")
    if eligible == 0:
        raise AssertionError(
            f"no eligible linear layers found to check for {bits}-bit quantization "
            f"(skipped as full precision: {', '.join(skipped) or 'none'})"
        )
    if offending:
        raise AssertionError(
            "\n".join(
                [
                    f"{len(offending)} of {eligible} eligible linear layers are not {bits}-bit "
                    f"bitsandbytes layers ({wanted}):",
                    *cap(offending),
                    "kept in full precision by transformers' rules: "
                    + (", ".join(skipped) or "none"),
                ]
            )
        )


def _quantization_problem(module: Any, bits: int, bnb: Any) -> str | None:
    weight = getattr(module, "weight", None)
    dtype = str(getattr(weight, "dtype", "no weight")).removeprefix("torch.")
    kind = type(module).__name__
    if bits == 8:
        if not isinstance(module, bnb.nn.Linear8bitLt):
            return f"{kind} (not quantized to int8), weight {dtype}"
        if not isinstance(weight, bnb.nn.Int8Params) or dtype != "int8":
            return f"Linear8bitLt, but its weight is {type(weight).__name__} {dtype}, not int8"
        return None
    if not isinstance(module, bnb.nn.Linear4bit):
        return f"{kind} (not quantized to 4 bits), weight {dtype}"
    if not isinstance(weight, bnb.nn.Params4bit) or getattr(weight, "quant_state", None) is None:
        return f"Linear4bit, but its weight is {type(weight).__name__} {dtype} and not quantized"
    return None


def _footprint(model: Any) -> int:
    footprint = getattr(model, "get_memory_footprint", None)
    if callable(footprint):
        return int(footprint())
    tensors = [*model.parameters(), *model.buffers()]
    return sum(int(tensor.nelement() * tensor.element_size()) for tensor in tensors)


def _describe_precision(model: Any) -> str:
    quantized = loaded_quantized_mode(model)
    if quantized is not None:
        return quantized
    dtype = getattr(model, "dtype", None)
    return str(dtype).removeprefix("torch.") if dtype is not None else "unknown dtype"


@checked_call
def assert_memory_footprint(reference: object, candidate: object, *, min_ratio: float) -> float:
    """``reference`` footprint / ``candidate`` footprint >= ``min_ratio``; returns the ratio.

    Reference first, then the candidate (``torch.testing.assert_close`` takes the actual
    value first); ``min_ratio`` is keyword-only. Footprints come from
    ``get_memory_footprint()`` (parameters and buffers). LLM.int8 halves each quantized
    ``nn.Linear`` of an fp16 model, but embeddings, lm_head and norms stay 16-bit, so real
    fp16/int8 ratios are 1.5-1.9 (transformers' own tests), not 2.
    """
    __tracebackhide__ = True
    min_ratio = check_number("min_ratio", min_ratio, above=0)
    reference_model, _ = unpack(reference, what="reference")
    candidate_model, _ = unpack(candidate, what="candidate")
    reference_bytes = _footprint(reference_model)
    candidate_bytes = _footprint(candidate_model)
    ratio = reference_bytes / candidate_bytes if candidate_bytes else math.inf
    if ratio < min_ratio:
        raise AssertionError(
            f"memory footprint ratio {ratio:.3f} < {min_ratio}: reference "
            f"{format_bytes(reference_bytes)} ({reference_bytes} B, "
            f"{_describe_precision(reference_model)}), candidate "
            f"{format_bytes(candidate_bytes)} ({candidate_bytes} B, "
            f"{_describe_precision(candidate_model)})"
        )
    return ratio

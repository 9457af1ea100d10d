"""Assertions for tests of Hugging Face models: placement, quantization and correctness.

Every function raises ``AssertionError`` with a readable message when the check fails and
returns what it measured when it passes. ``reference`` / ``candidate`` arguments accept a
model, a ``(model, tokenizer)`` pair, or any object with ``.model`` and ``.tokenizer``
(such as ``pytest_gpuinfer.loading.LoadedModel``). Bad arguments raise
``probes.errors.InputError``.

torch, transformers and bitsandbytes are imported inside the functions that need them.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from pytest_gpuinfer.probes.bnb_modules import kept_in_full_precision, module_matches
from pytest_gpuinfer.probes.errors import InputError
from pytest_gpuinfer.probes.memory_units import format_bytes

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_TOLERANCES",
    "GenerationComparison",
    "LogitsComparison",
    "LogitsTolerance",
    "assert_device_map",
    "assert_embeddings_close",
    "assert_generation_close",
    "assert_logits_close",
    "assert_memory_footprint",
    "assert_on_device",
    "assert_quantized",
]

# How many rows a failure message lists before it summarises the rest.
_MAX_ROWS = 20


# --------------------------------------------------------------------------- helpers


def _unpack(obj: object, tokenizer: Any = None) -> tuple[Any, Any]:
    """(model, tokenizer) from a model, a (model, tokenizer) pair or a LoadedModel-like."""
    import torch

    if isinstance(obj, torch.nn.Module):
        return obj, tokenizer
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], torch.nn.Module):
        return obj[0], tokenizer if tokenizer is not None else obj[1]
    inner = getattr(obj, "model", None)
    if isinstance(inner, torch.nn.Module):
        return inner, tokenizer if tokenizer is not None else getattr(obj, "tokenizer", None)
    raise InputError(
        "expected a torch model, a (model, tokenizer) pair or a LoadedModel; "
        f"got {type(obj).__name__}"
    )


def _model_device(model: Any) -> torch.device:
    import torch

    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    for tensor in model.parameters():
        return tensor.device  # type: ignore[no-any-return]
    return torch.device("cpu")


def _accelerator_type() -> str:
    import torch

    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        current = accelerator.current_accelerator()
        if current is not None:
            return str(current.type)
    return "cuda"


def _normalize_device(device: object) -> str:
    """One spelling per device: 0 / "cuda" / torch.device("cuda", 0) -> "cuda:0"."""
    import torch

    if isinstance(device, bool):
        raise InputError(f"device {device!r} is not a device; expected an int, 'cpu' or 'cuda:0'")
    if isinstance(device, int):
        return f"{_accelerator_type()}:{device}"
    if isinstance(device, str) and device in ("disk", "meta", "cpu"):
        return device
    try:
        parsed: torch.device = torch.device(device)  # type: ignore[call-overload]
    except (RuntimeError, TypeError) as error:
        raise InputError(
            f"device {device!r} is not a device; expected an int, 'cpu', 'disk' or 'cuda:0'"
        ) from error
    kind = str(parsed.type)
    if kind in ("cpu", "meta"):
        return kind
    return f"{kind}:{parsed.index if parsed.index is not None else 0}"


def _iter_tensors(value: object, path: str) -> Iterator[tuple[str, torch.Tensor]]:
    import torch

    if isinstance(value, torch.Tensor):
        yield path or "inputs", value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _iter_tensors(item, f"{path}[{key!r}]" if path else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _iter_tensors(item, f"{path}[{index}]")


def _cap(lines: list[str], limit: int = _MAX_ROWS) -> list[str]:
    if len(lines) <= limit:
        return lines
    return [*lines[:limit], f"... and {len(lines) - limit} more"]


def _to_device(inputs: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    import torch

    return {
        key: value.to(device) if isinstance(value, torch.Tensor) else value
        for key, value in inputs.items()
    }


def _require_tokenizer(tokenizer: Any, what: str) -> Any:
    if tokenizer is None:
        raise InputError(
            f"{what} needs a tokenizer: pass tokenizer=, a (model, tokenizer) pair or a LoadedModel"
        )
    return tokenizer


def _token_text(tokenizer: Any, token_id: int) -> str:
    if tokenizer is None:
        return f"{token_id}"
    return f"{token_id} {tokenizer.decode([token_id])!r}"


# --------------------------------------------------------------------------- placement


def assert_on_device(model: object, inputs: object) -> None:
    """Every tensor in ``inputs`` (tensor, dict, BatchEncoding, list) sits on ``model.device``.

    ``model.device`` is the device of the model's first parameter, so under a multi-device
    map it is the first shard's device: where ``generate()`` and ``forward()`` expect inputs.
    """
    __tracebackhide__ = True
    net: Any = _unpack(model)[0]
    expected = _normalize_device(_model_device(net))
    tensors = list(_iter_tensors(inputs, ""))
    if not tensors:
        raise InputError(f"inputs hold no tensors (got {type(inputs).__name__})")
    wrong = [
        f"  {name}: {_normalize_device(tensor.device)}"
        for name, tensor in tensors
        if _normalize_device(tensor.device) != expected
    ]
    if wrong:
        raise AssertionError(
            "\n".join(
                [
                    f"{len(wrong)} of {len(tensors)} input tensors are not on the model's device "
                    f"{expected}:",
                    *_cap(wrong),
                    "Move them with inputs.to(model.device).",
                ]
            )
        )


def _hook_location(module: Any, name: str) -> str | None:
    """Where accelerate keeps an offloaded tensor of ``module``: "cpu", "disk" or None."""
    hook = getattr(module, "_hf_hook", None)
    hooks = list(getattr(hook, "hooks", ())) or ([hook] if hook is not None else [])
    for candidate in hooks:
        weights_map = getattr(candidate, "weights_map", None)
        if not getattr(candidate, "offload", False) or weights_map is None:
            continue
        dataset = getattr(weights_map, "dataset", weights_map)
        key = f"{getattr(weights_map, 'prefix', '')}{name}"
        if key in getattr(dataset, "state_dict", {}):
            return "cpu"
        if key in getattr(dataset, "index", {}):
            return "disk"
        if isinstance(dataset, Mapping) and key in dataset:
            return "cpu"
    return None


def _offloads(module: Any) -> bool:
    """Whether accelerate offloads ``module``'s weights (an AlignDevicesHook with offload)."""
    hook = getattr(module, "_hf_hook", None)
    hooks = list(getattr(hook, "hooks", ())) or ([hook] if hook is not None else [])
    return any(getattr(candidate, "offload", False) for candidate in hooks)


def _placements(model: Any) -> list[tuple[str, str, bool]]:
    """(tensor name, normalized device, is a buffer of an offloaded module) for every
    parameter and buffer, offload resolved."""
    placements: list[tuple[str, str, bool]] = []
    for module_name, module in model.named_modules():
        offloaded = _offloads(module)
        tensors = [
            *((name, tensor, False) for name, tensor in module.named_parameters(recurse=False)),
            *((name, tensor, True) for name, tensor in module.named_buffers(recurse=False)),
        ]
        for name, tensor, is_buffer in tensors:
            full_name = f"{module_name}.{name}" if module_name else name
            device = _normalize_device(tensor.device)
            if device == "meta":
                device = _hook_location(module, name) or "meta"
            placements.append((full_name, device, offloaded and is_buffer and device != "meta"))
    return placements


def _map_entry(name: str, expected: Mapping[str, str]) -> str | None:
    """The longest prefix of ``name`` (on a module boundary) that ``expected`` maps."""
    best: str | None = None
    for prefix in expected:
        if (prefix == "" or name == prefix or name.startswith(prefix + ".")) and (
            best is None or len(prefix) > len(best)
        ):
            best = prefix
    return best


def assert_device_map(model: object, expected: Mapping[str, object] | int | str) -> None:
    """Every parameter and buffer sits where ``expected`` says.

    ``expected`` maps module prefixes to devices, as ``model.hf_device_map`` does
    (``{"model.layers.0": 0, "lm_head": "cpu"}``; ``""`` is the whole model), or is one
    device for everything. Devices may be ints, ``"cpu"``, ``"disk"``, ``"cuda:0"`` or
    ``torch.device``; tensors accelerate offloaded to the CPU or disk count as there, and
    the buffers of such modules may sit on the execution device, where accelerate keeps them.
    """
    __tracebackhide__ = True
    net: Any = _unpack(model)[0]
    mapping = expected if isinstance(expected, Mapping) else {"": expected}
    if not mapping:
        raise InputError("expected device map is empty")
    normalized = {str(prefix): _normalize_device(device) for prefix, device in mapping.items()}
    placements = _placements(net)
    rows: list[tuple[str, str, str]] = []
    for name, actual, offloaded_buffer in placements:
        entry = _map_entry(name, normalized)
        want = "(not in map)" if entry is None else normalized[entry]
        # accelerate keeps the buffers of CPU/disk-offloaded modules on the execution
        # device (offload_buffers=False, its default): that is where they belong.
        if want != actual and not (offloaded_buffer and want in ("cpu", "disk")):
            rows.append((name, want, actual))
    if not rows:
        return
    width = max(len("tensor"), *(len(row[0]) for row in rows[:_MAX_ROWS]))
    lines = [f"  {'tensor':<{width}}  {'expected':<12}  actual"]
    lines += [f"  {name:<{width}}  {want:<12}  {actual}" for name, want, actual in rows]
    raise AssertionError(
        "\n".join(
            [
                f"{len(rows)} of {len(placements)} parameters/buffers are not where the map says:",
                *_cap(lines, _MAX_ROWS + 1),
            ]
        )
    )


# --------------------------------------------------------------------------- quantization


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

    if bits not in (4, 8):
        raise InputError(f"bits={bits!r}: expected 8 (LLM.int8) or 4 (nf4/fp4)")
    net: Any = _unpack(model)[0]
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
                    *_cap(offending),
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
    if getattr(model, "is_loaded_in_8bit", False):
        return "int8"
    if getattr(model, "is_loaded_in_4bit", False):
        return "4-bit"
    dtype = getattr(model, "dtype", None)
    return str(dtype).removeprefix("torch.") if dtype is not None else "unknown dtype"


def assert_memory_footprint(reference: object, candidate: object, min_ratio: float) -> float:
    """``reference`` footprint / ``candidate`` footprint >= ``min_ratio``; returns the ratio.

    Footprints come from ``get_memory_footprint()`` (parameters and buffers). LLM.int8
    halves each quantized ``nn.Linear`` of an fp16 model, but embeddings, lm_head and norms
    stay 16-bit, so real fp16/int8 ratios are 1.5-1.9 (transformers' own tests), not 2.
    """
    __tracebackhide__ = True
    if not min_ratio > 0:
        raise InputError(f"min_ratio={min_ratio!r}: expected a positive number")
    reference_model, _ = _unpack(reference)
    candidate_model, _ = _unpack(candidate)
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


# --------------------------------------------------------------------------- generation


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
    inputs = _to_device(dict(encoded), _model_device(model))
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


def _top_k(logprobs: torch.Tensor, k: int) -> list[tuple[int, float]]:
    values, indices = logprobs.topk(min(k, logprobs.shape[-1]))
    return [(int(index), float(value)) for value, index in zip(values, indices, strict=True)]


def assert_generation_close(
    reference: object,
    candidate: object,
    prompts: str | Sequence[str],
    max_new_tokens: int = 16,
    top_k: int = 5,
    tokenizer: Any = None,
    generate_kwargs: Mapping[str, Any] | None = None,
) -> list[GenerationComparison]:
    """Greedy generations of both models agree, or diverge only between near-ties.

    Each prompt is generated greedily (batch 1, inputs moved to each model's device). Equal
    tokens pass. At the first differing token, each side's token must be among the other
    side's ``top_k`` log-probabilities at that step; comparison of that prompt stops there
    (after a divergence the two continuations condition on different text). The tokenizer
    is ``tokenizer=``, else the candidate's, else the reference's.
    """
    __tracebackhide__ = True
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts:
        raise InputError("prompts is empty: pass at least one prompt")
    if max_new_tokens < 1 or top_k < 1:
        raise InputError(
            f"max_new_tokens={max_new_tokens!r}, top_k={top_k!r}: both must be at least 1"
        )
    reference_model, reference_tokenizer = _unpack(reference, tokenizer)
    candidate_model, candidate_tokenizer = _unpack(candidate, tokenizer)
    tok = _require_tokenizer(
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
            lines.append(f"    token {_token_text(tokenizer, token)} (logprob {logprob:.3f})")
            ranked = ", ".join(
                f"{_token_text(tokenizer, t)} {lp:.3f}"
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


# --------------------------------------------------------------------------- logits


@dataclass(frozen=True)
class LogitsTolerance:
    """Bounds for ``assert_logits_close``; errors are in log-probability units (nats)."""

    min_top1_agreement: float
    max_abs_error: float
    mean_abs_error: float
    tie_margin: float


# Defaults per mode: the candidate in that mode against a full-precision (fp32 or fp16,
# eager attention) reference. Set from CPU measurements listed in docs/writing-tests.md
# ("Tolerances"), roughly 3x above the worst seen. The max error is an extreme value over
# every vocabulary entry: on a confident trained model quantization moves rare tokens'
# log-probabilities by nats, so for int8/nf4 it only catches gross corruption; the mean
# and the top-1 agreement are the sharper checks.
DEFAULT_TOLERANCES: Mapping[str, LogitsTolerance] = MappingProxyType(
    {
        "fp32": LogitsTolerance(0.999, 0.01, 0.001, 0.001),
        "fastpath": LogitsTolerance(0.99, 0.5, 0.02, 0.05),
        "fp16": LogitsTolerance(0.99, 0.5, 0.02, 0.05),
        "bf16": LogitsTolerance(0.98, 3.0, 0.15, 0.25),
        "int8": LogitsTolerance(0.95, 8.0, 0.1, 0.25),
        "nf4": LogitsTolerance(0.9, 30.0, 0.4, 1.0),
    }
)


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
    if isinstance(mode, str) and mode in DEFAULT_TOLERANCES:
        return mode
    if getattr(model, "is_loaded_in_8bit", False):
        return "int8"
    if getattr(model, "is_loaded_in_4bit", False):
        return "nf4"
    dtype = str(getattr(model, "dtype", "")).removeprefix("torch.")
    return {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}.get(dtype)


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
        tok = _require_tokenizer(tokenizer, "text inputs")
        # One text at a time: no padding, so no pad token needed and no padded positions.
        return [dict(tok(text, return_tensors="pt")) for text in inputs]
    raise InputError(
        "inputs: expected a string, a list of strings, a tokenized mapping or a tensor of "
        f"input ids; got {type(inputs).__name__}"
    )


def _forward_logits(model: Any, batch: Mapping[str, Any]) -> torch.Tensor:
    import torch

    with torch.no_grad():
        output = model(**_to_device(batch, _model_device(model)))
    logits = output.logits if hasattr(output, "logits") else output[0]
    return logits.float().cpu()  # type: ignore[no-any-return]


def assert_logits_close(
    reference: object,
    candidate: object,
    inputs: object,
    *,
    mode: str | None = None,
    min_top1_agreement: float | None = None,
    max_abs_error: float | None = None,
    mean_abs_error: float | None = None,
    tie_margin: float | None = None,
    tokenizer: Any = None,
) -> LogitsComparison:
    """One forward pass on both; compare log-softmax of the logits position by position.

    Log-probabilities rather than raw logits: softmax ignores a constant shift, so a shift
    is not an error. Checks top-1 agreement (near-ties forgiven, see ``LogitsComparison``),
    the largest and the mean absolute log-probability error over every vocabulary entry of
    every unmasked position. Unset bounds come from ``DEFAULT_TOLERANCES[mode]``; ``mode``
    defaults to the candidate's (``LoadedModel.mode``, else int8 / nf4 / its dtype).
    ``inputs``: text(s) (tokenized one at a time), a tokenized mapping, or input ids.
    """
    __tracebackhide__ = True
    import torch

    reference_model, reference_tokenizer = _unpack(reference, tokenizer)
    candidate_model, candidate_tokenizer = _unpack(candidate, tokenizer)
    if mode is None:
        mode = _infer_mode(candidate, candidate_model)
    if mode is not None and mode not in DEFAULT_TOLERANCES:
        raise InputError(f"mode={mode!r}: expected one of {', '.join(DEFAULT_TOLERANCES)}")
    base = DEFAULT_TOLERANCES[mode] if mode is not None else None
    overrides = (min_top1_agreement, max_abs_error, mean_abs_error, tie_margin)
    if base is None and None in overrides:
        raise InputError(
            "cannot tell the candidate's mode: pass mode= or all of min_top1_agreement, "
            "max_abs_error, mean_abs_error and tie_margin"
        )
    tolerance = LogitsTolerance(
        *(
            override if override is not None else getattr(base, field)
            for override, field in zip(
                overrides,
                ("min_top1_agreement", "max_abs_error", "mean_abs_error", "tie_margin"),
                strict=True,
            )
        )
    )

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
            f"logits not close ({mode or 'explicit'} tolerances): {'; '.join(problems)}\n"
            f"  {positions} positions; top-1 agreement {result.top1_agreement:.3f} "
            f"(exact {result.exact_top1_agreement:.3f}, ties within {tolerance.tie_margin} "
            f"forgiven); max abs error {result.max_abs_error:.4g} at input "
            f"{result.worst_position[0]} position {result.worst_position[1]}; "
            f"mean abs error {result.mean_abs_error:.4g}"
        )
    return result


# --------------------------------------------------------------------------- embeddings


def _embed(model: Any, tokenizer: Any, text: str, pooling: str) -> torch.Tensor:
    import torch

    encoded = tokenizer(text, return_tensors="pt")
    inputs = _to_device(dict(encoded), _model_device(model))
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


def assert_embeddings_close(
    reference: object,
    candidate: object,
    texts: str | Sequence[str],
    min_cosine: float = 0.999,
    tokenizer: Any = None,
    pooling: str = "mean",
) -> list[float]:
    """Sentence embeddings of both encoders have cosine similarity >= ``min_cosine`` per text.

    The embedding is the last hidden state, mean-pooled over the attention mask
    (``pooling="mean"``) or the first token's (``pooling="cls"``); encoder-decoder models
    use their encoder. Returns the cosine per text.
    """
    __tracebackhide__ = True
    import torch

    if pooling not in ("mean", "cls"):
        raise InputError(f"pooling={pooling!r}: expected 'mean' or 'cls'")
    if isinstance(texts, str):
        texts = [texts]
    if not texts:
        raise InputError("texts is empty: pass at least one text")
    reference_model, reference_tokenizer = _unpack(reference, tokenizer)
    candidate_model, candidate_tokenizer = _unpack(candidate, tokenizer)
    tok = _require_tokenizer(
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
                    *_cap(lines),
                ]
            )
        )
    return cosines

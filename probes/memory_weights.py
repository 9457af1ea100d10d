"""How much memory a model's weights take in each mode.

Two ways to the parameter list: a local safetensors checkpoint of a known architecture is
read from its headers (milliseconds, no torch); anything else is built on the meta device
(:mod:`probes.memory_meta`, seconds). Quantized modes follow what transformers'
bitsandbytes integration converts: only plain ``nn.Linear`` (and GPT-2's ``Conv1D``)
outside the modules it keeps in full precision.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_gpuinfer.probes import modes as _modes
from pytest_gpuinfer.probes.errors import InputError
from pytest_gpuinfer.probes.memory_class_facts import Unknown
from pytest_gpuinfer.probes.memory_meta import WeightTensor
from pytest_gpuinfer.probes.memory_units import format_bytes
from pytest_gpuinfer.probes.model_shape import (
    ARCHITECTURES,
    EMBEDDING_NAMES,
    OUTPUT_EMBEDDING,
    ModelShape,
    model_shape,
    states_experts,
)
from pytest_gpuinfer.probes.modes import dtype_bytes
from pytest_gpuinfer.probes.safetensors_header import HeaderTensor, read_checkpoint
from pytest_gpuinfer.probes.sources import read_config, resolve_config_path

NF4_BLOCK_SIZE = 64
"""bitsandbytes' default 4-bit block: one absmax per 64 weights."""
_NF4_NESTED_BLOCK_SIZE = 256
_NF4_CODE_BYTES = 16 * 4  # the 16-entry fp32 lookup table each 4-bit weight keeps
_DYNAMIC_CODE_BYTES = 256 * 4  # the 8-bit map double quantisation keeps per weight


@dataclass
class ModeWeights:
    """The bytes one mode's weights take in GPU memory."""

    mode: str
    parameter_bytes: int
    buffer_bytes: int
    quantized_parameters: int = 0
    """Parameters stored in 8 or 4 bits in this mode (0 for unquantized modes)."""
    note: str = ""
    largest_quantized: int = 0
    """Elements of the largest quantized weight (nf4 dequantizes one at a time)."""

    @property
    def total_bytes(self) -> int:
        return self.parameter_bytes + self.buffer_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "total_bytes": self.total_bytes,
            "parameter_bytes": self.parameter_bytes,
            "buffer_bytes": self.buffer_bytes,
            "quantized_parameters": self.quantized_parameters,
            "note": self.note,
        }


@dataclass
class MemoryEstimate:
    """Parameter counts and per-mode weight bytes of one model."""

    source: str
    config_path: str
    model_type: str
    model_class: str
    parameter_count: int
    linear_parameters: int
    embedding_parameters: int
    other_parameters: int
    buffer_count: int
    quantizable_linear_parameters: int
    """Weights of the Linear layers that int8/nf4 convert (lm_head and friends excluded)."""
    kept_in_full_precision: list[str]
    """Module patterns transformers' bitsandbytes integration leaves unquantized."""
    tied_parameters: list[list[str]]
    no_split_modules: list[str]
    modes: dict[str, ModeWeights]
    meta_model: Any = field(default=None, repr=False, compare=False)
    """The meta-device model, kept for device-map planning; not serialized."""
    shape: ModelShape | None = field(default=None, repr=False, compare=False)
    """The sizes the workload estimate needs; None when the config lacks them."""
    shape_error: str = ""
    """Why there is no shape (what cannot be estimated beyond the weights)."""
    read_from: str = "meta-device"
    """"safetensors-header" or "config" (fast, no torch), or "meta-device" (the model
    built from its config by transformers)."""
    largest_parameter: int = 0

    def weights_bytes(self, mode: str) -> int:
        return self.modes[mode].total_bytes

    def rows(self) -> list[tuple[str, str, str]]:
        """Table rows: (mode, weights, note)."""
        return [(m.mode, format_bytes(m.total_bytes), m.note) for m in self.modes.values()]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "config_path": self.config_path,
            "read_from": self.read_from,
            "model_type": self.model_type,
            "model_class": self.model_class,
            "parameter_count": self.parameter_count,
            "linear_parameters": self.linear_parameters,
            "embedding_parameters": self.embedding_parameters,
            "other_parameters": self.other_parameters,
            "buffer_count": self.buffer_count,
            "quantizable_linear_parameters": self.quantizable_linear_parameters,
            "kept_in_full_precision": sorted(self.kept_in_full_precision),
            "tied_parameters": [sorted(group) for group in self.tied_parameters],
            "no_split_modules": sorted(self.no_split_modules),
            "modes": {mode: weights.to_dict() for mode, weights in self.modes.items()},
        }


def _mode(mode: str) -> _modes.Mode:
    """The descriptor of ``mode`` (read through the module, so a mode added to
    ``MODE_INFO`` is estimated without an edit here)."""
    info = _modes.MODE_INFO.get(mode)
    if info is None:
        known = ", ".join(_modes.MODE_INFO)
        raise InputError(f"mode {mode!r} is not known: expected one of {known}")
    return info


def estimate_model_memory(
    source: str | os.PathLike[str],
    modes: Iterable[str] | None = None,
    *,
    nf4_double_quant: bool = False,
    meta_device: bool = False,
) -> MemoryEstimate:
    """Estimate the weight memory of the model at ``source`` in each of ``modes``.

    ``source`` is a model directory, a config.json, or a hub id already cached locally.
    A directory with a safetensors checkpoint of a model type in
    :data:`probes.model_shape.ARCHITECTURES` is read from its headers; anything else (or
    ``meta_device=True``) is built on the meta device. Nothing is downloaded or allocated.
    ``nf4_double_quant`` mirrors ``bnb_4bit_use_double_quant`` for the nf4 figure.
    ``modes`` defaults to every mode of :data:`probes.modes.MODE_INFO`.

    Raises:
        InputError: bad source, config or checkpoint header, weights that disagree with
            the config, or an unknown mode.
    """
    wanted = list(dict.fromkeys(_modes.MODE_INFO if modes is None else modes))
    for mode in wanted:
        _mode(mode)
    config_path = resolve_config_path(source)
    data, model_type = read_config(config_path)
    if not meta_device and _generic_header_applies(data, model_type, config_path):
        # A checkpoint of a type without a workload model: its headers give the weights
        # (no torch, milliseconds); the workload is estimated generically, with a margin.
        header = read_checkpoint(config_path.parent)
        if header is not None:
            return _from_generic_headers(os.fspath(source), config_path, data, header, wanted)
    if not meta_device and _fast_path_applies(data, model_type):
        tensors = read_checkpoint(config_path.parent) if config_path.name == "config.json" else None
        read_from = "safetensors-header"
        if tensors is None:
            from pytest_gpuinfer.probes.config_tensors import config_tensors

            tensors = config_tensors(data, model_shape(data, str(config_path)))
            read_from = "config"
        if tensors is not None:
            estimate = _from_headers(
                os.fspath(source), config_path, data, tensors, wanted, nf4_double_quant
            )
            estimate.read_from = read_from
            return estimate
    return _from_meta(os.fspath(source), config_path, data, model_type, wanted, nf4_double_quant)


def _fast_path_applies(data: dict[str, Any], model_type: str) -> bool:
    # A model type whose layout is modelled, with every size stated (a hand-written config
    # may rely on class defaults only transformers knows). Pre-quantized checkpoints store
    # packed weights: the meta path reads their config instead.
    arch = ARCHITECTURES.get(model_type)
    return (
        arch is not None
        and all(data.get(key) is not None for key in arch.required)
        and (not arch.moe or states_experts(data))
        and "quantization_config" not in data
    )


def _generic_header_applies(data: dict[str, Any], model_type: str, config_path: Path) -> bool:
    # A type transformers has a modeling file for (else the meta path's one-line error),
    # outside the table, with the decoder sizes at the config's top level (a multimodal
    # config nests them: the meta path reads its text config), not pre-quantized.
    from pytest_gpuinfer.probes.memory_class_facts import class_facts

    if model_type in ARCHITECTURES or "quantization_config" in data:
        return False
    if config_path.name != "config.json" or isinstance(class_facts(model_type).attention, Unknown):
        return False
    return _shape(data, str(config_path), None)[0] is not None


_ROUTER = "gate"
"""The router's module name in MoE blocks (``mlp.gate``, ``block_sparse_moe.gate``): a
plain ``nn.Parameter`` in transformers 5, not an ``nn.Linear``, so never quantized."""


def _is_expert(name: str) -> bool:
    # transformers 5 merges per-expert checkpoint weights into 3-D ``experts.*``
    # parameters on load (conversion_mapping.py), which bitsandbytes leaves 16-bit.
    return ".experts." in name


def _from_generic_headers(
    source: str,
    config_path: Path,
    data: dict[str, Any],
    header: list[HeaderTensor],
    modes: list[str],
) -> MemoryEstimate:
    shape = model_shape(data, str(config_path))
    tensors: list[WeightTensor] = []
    for t in header:
        module, _, local = t.name.rpartition(".")
        last = module.rpartition(".")[2]
        if last in EMBEDDING_NAMES or (len(t.shape) == 2 and "embed" in last):
            kind = "embedding"
        elif (
            len(t.shape) == 2
            and local == "weight"
            and not _is_expert(t.name)
            and not (shape.experts and last == _ROUTER)
        ):
            kind = "linear"
        else:
            kind = "other"
        # Which 2-D weights are nn.Linear is a guess without the class: the estimate is
        # marked unconfirmed and carries the unmodelled margin (memory_workload).
        quantizable = kind == "linear" and module != OUTPUT_EMBEDDING
        out = t.shape[0] if t.shape else 1
        tensors.append(WeightTensor(t.name, t.numel, kind, quantizable, out, False))
    rotary = 2 * (shape.head_dim // 2) * 4
    estimate = _assemble(source, config_path, shape.model_type, tensors, rotary, modes, False)
    architectures = data.get("architectures")
    if isinstance(architectures, list) and architectures:
        estimate.model_class = str(architectures[0])
    estimate.buffer_count = 2
    estimate.kept_in_full_precision = [OUTPUT_EMBEDDING]
    gated = any(".gate" in t.name or "gate_" in t.name or ".w1." in t.name for t in header)
    estimate.shape = _with_gating(shape, gated)
    estimate.read_from = "safetensors-header"
    return estimate


def _from_meta(
    source: str,
    config_path: Path,
    data: dict[str, Any],
    model_type: str,
    modes: list[str],
    double_quant: bool,
) -> MemoryEstimate:
    from pytest_gpuinfer.probes.bnb_modules import kept_in_full_precision, tied_groups
    from pytest_gpuinfer.probes.memory_meta import build_meta_model, model_facts, model_tensors

    model = build_meta_model(config_path, data, model_type)
    tied = tied_groups(model)
    kept = kept_in_full_precision(model, tied)
    tensors = model_tensors(model, kept)
    # Buffers keep the dtype they were built with (rotary inv_freq is fp32 whatever the
    # load dtype), so they count the same in every mode. Non-persistent ones included:
    # they sit in GPU memory all the same.
    buffers = list(model.named_buffers())
    buffer_bytes = sum(int(b.numel()) * b.element_size() for _, b in buffers)
    full, attention, gated = model_facts(model)
    shape, shape_error = _shape(full, str(config_path), attention)
    if shape is not None and shape.architecture is None:
        shape = _with_gating(shape, gated)
    estimate = _assemble(
        source, config_path, model_type, tensors, buffer_bytes, modes, double_quant
    )
    estimate.model_class = type(model).__name__
    estimate.buffer_count = len(buffers)
    estimate.kept_in_full_precision = kept
    estimate.tied_parameters = [g for g in tied if g]
    estimate.no_split_modules = sorted(getattr(model, "_no_split_modules", None) or ())
    estimate.meta_model = model
    estimate.shape, estimate.shape_error = shape, shape_error
    return estimate


def _with_gating(shape: ModelShape, gated: bool) -> ModelShape:
    from dataclasses import replace

    return replace(shape, gated_mlp=gated)


def _shape(
    data: dict[str, Any], where: str, attention: str | None
) -> tuple[ModelShape | None, str]:
    try:
        return model_shape(data, where, attention=attention), ""
    except InputError as error:
        return None, str(error)


_INPUT_EMBEDDINGS = ("embed_tokens", "wte", "shared", "word_embeddings")


def _module_tail(name: str) -> str:
    return name.rpartition(".")[0].rpartition(".")[2]


_LAYER_INDEX = re.compile(r"^(?:(?P<stack>.*?)\.)?(?:layers|h|block|blocks)\.(?P<index>\d+)\.")


def _from_headers(
    source: str,
    config_path: Path,
    data: dict[str, Any],
    header: list[HeaderTensor],
    modes: list[str],
    double_quant: bool,
) -> MemoryEstimate:
    model_type = str(data["model_type"])
    arch = ARCHITECTURES[model_type]
    shape = model_shape(data, str(config_path))
    tied = shape.tie_word_embeddings
    _check_agreement(config_path, data, shape, header)
    tensors: list[WeightTensor] = []
    tied_groups: list[list[str]] = []
    owners = [t.name for t in header if _module_tail(t.name) in _INPUT_EMBEDDINGS]
    embedding_owner = min(owners, key=len) if owners else ""
    for t in header:
        module, _, local = t.name.rpartition(".")
        last = module.rpartition(".")[2]
        if last in EMBEDDING_NAMES:
            kind = "embedding"
        elif len(t.shape) == 2 and local == "weight" and not _moe_parameter(arch, t.name):
            kind = "linear"
        else:
            kind = "other"
        if module == OUTPUT_EMBEDDING and tied and embedding_owner:
            tied_groups.append(sorted([embedding_owner, t.name]))
            continue  # one tensor with the input embedding: counted there
        keep = any(part in arch.keep_fp32 for part in module.split("."))
        quantizable = kind == "linear" and module != OUTPUT_EMBEDDING and not keep
        out = t.shape[1] if (quantizable and arch.conv1d) else (t.shape[0] if t.shape else 1)
        tensors.append(WeightTensor(t.name, t.numel, kind, quantizable, out, keep))
    if tied and embedding_owner and not tied_groups:
        tied_groups.append(sorted([embedding_owner, f"{OUTPUT_EMBEDDING}.weight"]))
    rotary = 2 * (shape.head_dim // 2) * 4 if arch.rotary else 0
    buffer_bytes = rotary + arch.extra_buffer_bytes
    estimate = _assemble(
        source, config_path, model_type, tensors, buffer_bytes, modes, double_quant
    )
    architectures = data.get("architectures")
    estimate.model_class = (
        str(architectures[0])
        if isinstance(architectures, list) and architectures
        else arch.model_class
    )
    estimate.buffer_count = (2 if arch.rotary else 0) + (1 if arch.extra_buffer_bytes else 0)
    estimate.kept_in_full_precision = sorted({OUTPUT_EMBEDDING, *arch.keep_fp32})
    estimate.tied_parameters = tied_groups
    estimate.shape = shape
    estimate.read_from = "safetensors-header"
    return estimate


def _moe_parameter(arch: Any, name: str) -> bool:
    """An expert weight or a router: parameters of non-Linear modules in transformers 5."""
    if not arch.moe:
        return False
    return _is_expert(name) or name.rpartition(".")[0].rpartition(".")[2] == _ROUTER


def _check_agreement(
    config_path: Path, data: dict[str, Any], shape: ModelShape, header: list[HeaderTensor]
) -> None:
    """Refuse weights that contradict their config: the estimate would describe neither."""
    where = f"the weights in {config_path.parent} disagree with {config_path.name}"
    for t in header:
        if _module_tail(t.name) in _INPUT_EMBEDDINGS:
            width = data.get("word_embed_proj_dim") or shape.hidden
            if len(t.shape) != 2 or t.shape[0] != shape.vocab or t.shape[1] != width:
                raise InputError(
                    f"{where}: '{t.name}' has shape {list(t.shape)} but the config says "
                    f"vocab_size={shape.vocab}, hidden size {width}"
                )
            break
    stacks: dict[str, int] = {}
    for t in header:
        match = _LAYER_INDEX.match(t.name)
        if match:
            stack = match.group("stack") or ""
            stacks[stack] = max(stacks.get(stack, 0), int(match.group("index")) + 1)
    for stack, count in stacks.items():
        expected = shape.encoder_layers if stack.startswith("encoder") else shape.layers
        if count != expected:
            raise InputError(
                f"{where}: the checkpoint has {count} layers in '{stack or 'the model'}' but "
                f"the config says {expected}"
            )


def _assemble(
    source: str,
    config_path: Path,
    model_type: str,
    tensors: list[WeightTensor],
    buffer_bytes: int,
    modes: list[str],
    double_quant: bool,
) -> MemoryEstimate:
    return MemoryEstimate(
        source=source,
        config_path=str(config_path),
        model_type=model_type,
        model_class="",
        parameter_count=sum(t.numel for t in tensors),
        linear_parameters=sum(t.numel for t in tensors if t.kind == "linear"),
        embedding_parameters=sum(t.numel for t in tensors if t.kind == "embedding"),
        other_parameters=sum(t.numel for t in tensors if t.kind == "other"),
        buffer_count=0,
        quantizable_linear_parameters=sum(t.numel for t in tensors if t.quantizable),
        kept_in_full_precision=[],
        tied_parameters=[],
        no_split_modules=[],
        modes={m: mode_bytes(m, tensors, buffer_bytes, double_quant) for m in modes},
        largest_parameter=max((t.numel for t in tensors), default=0),
    )


def nf4_weight_bytes(numel: int, double_quant: bool) -> int:
    """Bytes of one weight in bitsandbytes nf4: packed nibbles, absmax, code table."""
    packed = (numel + 1) // 2
    blocks = math.ceil(numel / NF4_BLOCK_SIZE)
    if double_quant:
        # absmax re-quantised to uint8 in blocks of 256, each with an fp32 scale, plus the
        # 8-bit code table and one fp32 offset.
        nested = math.ceil(blocks / _NF4_NESTED_BLOCK_SIZE)
        absmax = blocks + nested * 4 + _DYNAMIC_CODE_BYTES + 4
    else:
        absmax = blocks * 4
    return packed + absmax + _NF4_CODE_BYTES


def mode_bytes(
    mode: str, tensors: list[WeightTensor], buffer_bytes: int, double_quant: bool
) -> ModeWeights:
    """The weights of ``tensors`` in ``mode``, from its :class:`probes.modes.Mode`: the
    dtype the unquantized weights load in, and the bits of the quantized Linear weights."""
    info = _mode(mode)
    sixteen = dtype_bytes(info.weight_dtype or "float16") or 2
    if sixteen >= 4:
        return ModeWeights(mode, sum(t.numel for t in tensors) * sixteen, buffer_bytes)
    # _keep_in_fp32_modules applies when loading in fp16 (quantized modes load the rest in
    # fp16), not in bf16; _keep_in_fp32_modules_strict always.
    keeps_fp32 = info.weight_dtype != "bfloat16"
    total = 0
    quantized = 0
    largest = 0
    for t in tensors:
        if info.quantized and t.quantizable:
            quantized += t.numel
            largest = max(largest, t.numel)
            total += quantized_weight_bytes(info, t, double_quant)
        elif t.keep_fp32_strict or (t.keep_fp32 and keeps_fp32):
            total += t.numel * 4
        else:
            total += t.numel * sixteen
    return ModeWeights(mode, total, buffer_bytes, quantized, _note(info, double_quant), largest)


def quantized_weight_bytes(info: _modes.Mode, t: WeightTensor, double_quant: bool) -> int:
    """One quantized Linear weight: LLM.int8 (8 bits) keeps an fp32 scale per output row
    (SCB); bitsandbytes' 4-bit formats pack two per byte with an absmax per 64. Another
    width: its packed bits with an fp32 scale per row (the closest known layout)."""
    if info.bits == 8:
        return t.numel + t.out_features * 4
    if info.bits == 4:
        return nf4_weight_bytes(t.numel, double_quant)
    return math.ceil(t.numel * (info.bits or 16) / 8) + t.out_features * 4


def _note(info: _modes.Mode, double_quant: bool) -> str:
    if info.quantized:
        scales = {8: "fp32 scale per row", 4: "fp32 absmax per 64"}.get(
            info.bits or 0, "fp32 scale per row"
        )
        if info.bits == 4 and double_quant:
            scales = "double-quantized absmax"
        return f"Linear weights {info.bits}-bit + {scales}; embeddings, norms, lm_head 16-bit"
    if not info.dtype_fixed and info.weight_dtype == "float16":
        return f"same weights as fp16 ({info.description}): the attention changes no weights"
    return ""

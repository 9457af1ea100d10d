"""Every fact about an inference mode, one descriptor per mode (new mode: one entry + its rules)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class LogitsTolerance:
    """Bounds for ``assert_logits_close``; errors are in log-probability units (nats)."""

    min_top1_agreement: float
    max_abs_error: float
    mean_abs_error: float
    tie_margin: float


@dataclass(frozen=True)
class Mode:
    """One inference mode: how it loads, what its weights cost, how close it must stay."""

    name: str
    description: str
    weight_dtype: str | None
    """The torch dtype (name without ``torch.``) the non-quantized weights load in on a GPU;
    None where the user picks it (quantized modes keep a 16-bit default on a GPU)."""
    cpu_weight_dtype: str
    """The dtype the non-quantized weights take on a CPU when the mode leaves it open."""
    bits: int | None = None
    """Bits per quantized weight (8 for LLM.int8, 4 for nf4); None: not quantized."""
    bnb_config: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """The ``BitsAndBytesConfig`` keyword arguments that select this mode."""
    tolerance: LogitsTolerance = LogitsTolerance(0.999, 0.01, 0.001, 0.001)
    """Default closeness against a full-precision, eager reference (see docs/writing-tests.md)."""
    dtype_fixed: bool = True
    """True when the mode *is* its dtype, so a ``dtype=`` override is refused."""
    kept_dtype: str | None = None
    """The dtype the unquantized parts keep on every device, where the quantizer fixes it
    (LLM.int8: fp16, transformers' own default); None: the device decides."""
    load_options: tuple[str, ...] = ()
    """``load_model`` keyword arguments only this mode takes (its quantizer's knobs)."""
    fused_attention: bool = False
    """True when the mode picks the attention implementation itself (fastpath)."""

    def __hash__(self) -> int:
        # bnb_config is a mapping (unhashable); a mode's name is its identity.
        return hash(self.name)

    def __str__(self) -> str:
        return self.name

    @property
    def quantized(self) -> bool:
        return self.bits is not None

    @property
    def torch_dtype_name(self) -> str:
        """``torch.float16``-style name of the GPU weight dtype (quantized: the compute dtype)."""
        return f"torch.{self.weight_dtype or 'float16'}"


_DTYPE_BYTES: Mapping[str, int] = MappingProxyType(
    {
        "float64": 8, "int64": 8, "uint64": 8,
        "float32": 4, "int32": 4, "uint32": 4,
        "float16": 2, "bfloat16": 2, "int16": 2, "uint16": 2,
        "float8_e4m3fn": 1, "float8_e5m2": 1, "int8": 1, "uint8": 1, "bool": 1,
    }
)  # fmt: skip

SAFETENSORS_DTYPES: Mapping[str, str] = MappingProxyType(
    {
        "F64": "float64", "I64": "int64", "U64": "uint64",
        "F32": "float32", "I32": "int32", "U32": "uint32",
        "F16": "float16", "BF16": "bfloat16", "I16": "int16", "U16": "uint16",
        "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
        "I8": "int8", "U8": "uint8", "BOOL": "bool",
    }
)  # fmt: skip
"""safetensors dtype tag -> torch dtype name."""


def dtype_bytes(dtype_name: str) -> int | None:
    """Bytes per element of a torch/safetensors dtype name ("float16", "F16", "torch.bfloat16")."""
    name = dtype_name.removeprefix("torch.")
    return _DTYPE_BYTES.get(SAFETENSORS_DTYPES.get(name, name))


# Tolerances set from CPU measurements listed in docs/writing-tests.md ("Tolerances"),
# roughly 3x above the worst seen. The max error is an extreme value over every
# vocabulary entry: on a confident trained model quantization moves rare tokens'
# log-probabilities by nats, so for int8/nf4 it only catches gross corruption; the mean
# and the top-1 agreement are the sharper checks.
_ALL: tuple[Mode, ...] = (
    Mode("fp32", "full precision", "float32", "float32"),
    Mode(
        "fp16",
        "half precision",
        "float16",
        "float16",
        tolerance=LogitsTolerance(0.99, 0.5, 0.02, 0.05),
    ),
    Mode(
        "bf16",
        "bfloat16",
        "bfloat16",
        "bfloat16",
        tolerance=LogitsTolerance(0.98, 3.0, 0.15, 0.25),
    ),
    Mode(
        "int8",
        "LLM.int8 (bitsandbytes 8-bit)",
        None,
        "float32",
        bits=8,
        bnb_config=MappingProxyType({"load_in_8bit": True}),
        tolerance=LogitsTolerance(0.95, 8.0, 0.1, 0.25),
        dtype_fixed=False,
        kept_dtype="float16",
        load_options=(
            "llm_int8_threshold",
            "llm_int8_skip_modules",
            "llm_int8_enable_fp32_cpu_offload",
            "llm_int8_has_fp16_weight",
        ),
    ),
    Mode(
        "nf4",
        "4-bit nf4 (bitsandbytes)",
        None,
        "float32",
        bits=4,
        bnb_config=MappingProxyType({"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}),
        tolerance=LogitsTolerance(0.9, 30.0, 0.4, 1.0),
        dtype_fixed=False,
        load_options=("bnb_4bit_compute_dtype", "bnb_4bit_use_double_quant"),
    ),
    Mode(
        "fastpath",
        "fused attention (SDPA / flash attention / BetterTransformer) in fp16",
        "float16",
        "float32",
        tolerance=LogitsTolerance(0.99, 0.5, 0.02, 0.05),
        dtype_fixed=False,
        fused_attention=True,
    ),
)

MODE_INFO: Mapping[str, Mode] = MappingProxyType({mode.name: mode for mode in _ALL})
"""Every mode by name, in display order."""

MODES: tuple[str, ...] = tuple(MODE_INFO)
"""Every inference mode the rules judge, in display order."""

QUANTIZED_MODES: frozenset[str] = frozenset(m.name for m in _ALL if m.quantized)

DEFAULT_TOLERANCES: Mapping[str, LogitsTolerance] = MappingProxyType(
    {m.name: m.tolerance for m in _ALL}
)


def parse_mode(value: object, *, what: str = "mode") -> Mode:
    """ "int8" (case and spaces forgiven) or a ``Mode`` -> the ``Mode``; the one mode parser
    of every door (CLI, marker, ``load_model``, profile file). InputError names the value."""
    if isinstance(value, Mode):
        return value
    mode = MODE_INFO.get(value.strip().lower()) if isinstance(value, str) else None
    if mode is None:
        from pytest_gpuinfer.probes.errors import InputError

        raise InputError(f"unknown {what} {value!r}; expected one of: {', '.join(MODES)}")
    return mode


def parse_mode_list(value: str | Sequence[object], *, what: str = "mode") -> tuple[Mode, ...]:
    """ "int8,fastpath" or ["int8", "fastpath"] -> the ``Mode``s, each named once.

    An empty entry (``int8,,fp16``, a trailing comma) and a mode named twice are errors,
    since both are usually a typo for a mode that was meant.
    """
    from pytest_gpuinfer.probes.errors import InputError

    items = value.split(",") if isinstance(value, str) else list(value)
    expected = f"expected one or more of: {', '.join(MODES)}, separated by commas"
    if not any(str(item).strip() for item in items):
        raise InputError(f"no {what} given in {value!r}; {expected}")
    modes: list[Mode] = []
    for item in items:
        if not str(item).strip():
            raise InputError(
                f"empty {what} in {value!r} (two commas in a row, or one at an end); {expected}"
            )
        mode = parse_mode(item, what=what)
        if mode in modes:
            raise InputError(
                f"{what} {mode.name!r} is given twice in {value!r}; name each mode once"
            )
        modes.append(mode)
    return tuple(modes)


def mode_for_dtype(dtype_name: str) -> str | None:
    """The plain mode whose weights have ``dtype_name`` ("float16" -> "fp16"), if any."""
    name = dtype_name.removeprefix("torch.")
    for mode in _ALL:
        if not mode.quantized and mode.dtype_fixed and mode.weight_dtype == name:
            return mode.name
    return None


def bnb_config_text(mode: str) -> str:
    """``BitsAndBytesConfig(load_in_8bit=True)``-style text for a quantized mode."""
    items = ", ".join(f"{k}={v!r}" for k, v in MODE_INFO[mode].bnb_config.items())
    return f"BitsAndBytesConfig({items})"

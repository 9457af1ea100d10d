"""The peak GPU memory of a workload: weights + KV cache + activations + buffers + context.

A workload is ``generate()`` on ``batch_size`` prompts of ``seq_len`` tokens producing
``new_tokens`` more (an encoder-decoder: ``seq_len`` encoder tokens, ``new_tokens``
decoder tokens). The peak is the largest of three moments, each a sum of parts:

* the prefill: every layer's K/V at ``seq_len`` tokens (sliding-window layers too: they
  keep a view of the full tensor until the first decode step) plus the largest set of
  intermediates alive inside one layer; logits for the last position only
  (``logits_to_keep=1``), in fp32 as generate copies them;
* the end of decoding: K/V at ``seq_len + new_tokens`` (sliding layers capped at their
  window), plus one layer's K/V twice while ``torch.cat`` grows it.

Loading is reported apart (``load_peak``): int8/nf4 weights arrive in 16 bits and are
quantized on the GPU, so the caching allocator reserves about the 16-bit size while
loading (REFERENCE §9), but gives those cached blocks back when a later allocation needs
them: a quantized model loads on a GPU smaller than its 16-bit weights.

The moments' per-layout arithmetic is in :mod:`probes.memory_moments`. Pure arithmetic on
:class:`probes.model_shape.ModelShape`: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pytest_gpuinfer.probes.errors import InputError
from pytest_gpuinfer.probes.memory_moments import (
    activation_bytes,
    decoder_only_moments,
    encoder_decoder_moments,
)
from pytest_gpuinfer.probes.memory_units import format_bytes
from pytest_gpuinfer.probes.memory_weights import MemoryEstimate
from pytest_gpuinfer.probes.modes import parse_mode

CUDA_CONTEXT_BYTES = 500 * 2**20
"""What a CUDA process holds outside torch's allocator: the context and the loaded kernel
images (NVML's process memory minus ``max_memory_reserved``; 300-600 MiB on recent
drivers)."""

LIBRARY_WORKSPACE_BYTES = 64 * 2**20
"""cuBLAS/cuBLASLt workspaces and the small-block pool generate() fills: inside torch's
allocator, so in ``max_memory_reserved``."""

QUANTIZED_LOAD_RESIDUE_TENSORS = 1
"""A quantized load of Conv1D weights (GPT-2) transposes each 16-bit weight before
quantizing it (transformers' integrations/bitsandbytes.py: "transposing the weight matrix
prior to quantization"), and ``empty_cache()`` cannot return the segments those copies
split: on the H100 GPT-2 int8/nf4 kept 126 MiB reserved above allocated after loading,
one 16-bit copy of its largest weight (wte, 123 MiB). Models of ``nn.Linear`` weights kept
14-50 MiB in int8/nf4, as in fp16 (15-30 MiB), so they get no residue: counting one there
(the previous calibration) put every int8/nf4 row of a Llama-style model one embedding
(98 MiB on the H100 models, 250-500 MiB on the H200's 1.3-3B ones) too high, which is
the 0.74-0.9 measured/predicted of REFERENCE section 12. Unmodelled types keep it (err high)."""

UNMODELLED_MARGIN = 0.30
"""Added to the workload part (everything but the weights) of a model type without a
workload model. Sized from the one measured miss: a Mixtral-shaped MoE estimated with the
generic dense layer measured 1.10x, 1.16x and 1.29x the predicted *peak* in fp16 on the
H200 (REFERENCE section 12), int8 up to 1.13x; the peak's workload part was then about
half the peak or less, so the generic layer under-counted it by up to ~60 %. MoE is now
modelled; what is left unmodelled is layouts the generic layer may miss the same way, so
the margin covers a 1.3x miss of the workload part without hiding a gross one."""

UNCONFIRMED_COMMAND = (
    "python benchmarks/gpu_memory_validation.py --model {source} --modes {mode} "
    "--workload {batch}x{seq}+{new} --out DIR"
)
"""How to measure an unconfirmed estimate on a GPU (one row of the validation script)."""


DEFAULT_BATCH_SIZE = 1
DEFAULT_SEQ_LEN = 512
DEFAULT_NEW_TOKENS = 64


MAX_BATCH_SIZE = 1 << 20
"""The largest batch a workload may name (about a million prompts)."""
MAX_TOKENS = 1 << 30
"""The most prompt or new tokens a workload may name (about a billion): far past any
model's positions, small enough that the arithmetic stays exact and fast."""
_LIMITS = {"batch_size": MAX_BATCH_SIZE, "seq_len": MAX_TOKENS, "new_tokens": MAX_TOKENS}


def check_size(name: str, value: object, low: int) -> int:
    """``value`` as a workload size from ``low`` to its bound; InputError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"{name} {value!r} is not valid: expected a whole number >= {low}")
    high = _LIMITS[name]
    if value > high:
        digits = len(str(value))
        shown = repr(value) if digits <= 20 else f"of {digits} digits"
        raise InputError(f"{name} {shown} is too large: expected at most {high:,}")
    return value


@dataclass(frozen=True)
class Workload:
    """``generate()`` on ``batch_size`` x ``seq_len`` prompt tokens, ``new_tokens`` more."""

    batch_size: int = DEFAULT_BATCH_SIZE
    seq_len: int = DEFAULT_SEQ_LEN
    new_tokens: int = DEFAULT_NEW_TOKENS

    def __post_init__(self) -> None:
        for name, low in (("batch_size", 1), ("seq_len", 1), ("new_tokens", 0)):
            check_size(name, getattr(self, name), low)

    @classmethod
    def requested(cls, **sizes: Any) -> Workload:
        """A workload a user asked for (CLI, marker, ``load_model``): ``new_tokens`` >= 1
        too, since a ``generate()`` that adds no token is no workload. Internally a
        prefill-only estimate may still use ``new_tokens=0``."""
        if "new_tokens" in sizes:
            check_size("new_tokens", sizes["new_tokens"], 1)
        return cls(**sizes)

    def to_dict(self) -> dict[str, int]:
        return {
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
            "new_tokens": self.new_tokens,
        }


def positions_note(positions: int | None, seq_len: int, new_tokens: int) -> str | None:
    """The warning for a prompt plus new tokens past the model's positions, or None."""
    total = seq_len + new_tokens
    if positions is None or total <= positions:
        return None
    return f"seq_len + new_tokens = {total} is beyond the model's {positions} positions"


@dataclass
class WorkloadEstimate:
    """The predicted peak of one workload in one mode, and its parts (bytes)."""

    mode: str
    workload: Workload
    weights: int
    kv_cache: int
    """K/V alive at the peak moment (prefill: at seq_len; decoding: at seq_len + new)."""
    kv_cache_final: int
    """K/V after the last new token (sliding layers capped at their window)."""
    activations: int
    """The largest set of intermediates alive at once (excluding K/V and logits)."""
    logits: int
    quantization_buffers: int
    """bitsandbytes: int8 copies of inputs, int32 products, nf4 dequantized weights."""
    allocator: int
    """The caching allocator's fragmentation and library workspaces."""
    load_peak: int
    """Reserved while loading (int8/nf4 pass through 16 bits); cached, not needed: not in
    the peak."""
    cuda_context: int = CUDA_CONTEXT_BYTES
    peak_moment: str = "prefill"
    """"prefill" or "decode": which moment sets the peak."""
    attention: str = "sdpa"
    notes: list[str] = field(default_factory=list)
    confirmed: bool = True
    """False for a model type without a workload model: its peak carries
    :data:`UNMODELLED_MARGIN` and was never measured here."""
    margin: int = 0
    """Bytes added for an unmodelled type (in the peak)."""
    measure_with: str = ""
    """The command that measures an unconfirmed estimate."""

    @property
    def peak_reserved_bytes(self) -> int:
        """What ``torch.cuda.max_memory_reserved()`` should show for the run."""
        return (
            self.weights
            + self.kv_cache
            + self.activations
            + self.logits
            + self.quantization_buffers
            + self.allocator
            + self.margin
        )

    @property
    def allocated_dynamic_bytes(self) -> int:
        """Bytes of tensors the run itself allocates at its peak (no weights, no allocator
        slack): what a live-tensor count on a CPU run measures."""
        return self.kv_cache + self.activations + self.logits + self.quantization_buffers

    @property
    def peak_bytes(self) -> int:
        """The process's peak GPU memory, CUDA context included (what NVML shows)."""
        return self.peak_reserved_bytes + self.cuda_context

    def parts(self) -> dict[str, int]:
        return {
            "weights": self.weights,
            "kv_cache": self.kv_cache,
            "activations": self.activations,
            "logits": self.logits,
            "quantization_buffers": self.quantization_buffers,
            "allocator": self.allocator,
            "unmodelled_margin": self.margin,
            "cuda_context": self.cuda_context,
        }

    def summary(self) -> str:
        """ "3.71 GiB = weights 2.05 GiB + KV 0.70 GiB + ... (peak at prefill)"."""
        shown = [f"{k.replace('_', ' ')} {format_bytes(v)}" for k, v in self.parts().items() if v]
        text = f"{format_bytes(self.peak_bytes)} = " + " + ".join(shown)
        text = f"{text} (peak at {self.peak_moment})"
        if not self.confirmed:
            text += f"; unconfirmed: no workload model, measure with: {self.measure_with}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "workload": self.workload.to_dict(),
            "peak_bytes": self.peak_bytes,
            "peak_reserved_bytes": self.peak_reserved_bytes,
            "peak_moment": self.peak_moment,
            "parts": self.parts(),
            "kv_cache_final_bytes": self.kv_cache_final,
            "load_peak_bytes": self.load_peak,
            "attention": self.attention,
            "notes": list(self.notes),
            "confirmed": self.confirmed,
            "verdict": "estimated" if self.confirmed else "unconfirmed",
            "measure_with": self.measure_with or None,
        }


def estimate_workload(
    estimate: MemoryEstimate,
    mode: str,
    workload: Workload,
    *,
    attention: str | None = None,
    cuda_context: int = CUDA_CONTEXT_BYTES,
    fragmentation_scale: float = 1.0,
) -> WorkloadEstimate:
    """The predicted peak of ``workload`` in ``mode`` for the model of ``estimate``.

    ``attention`` overrides the model's default attention ("sdpa", "eager"). Every mode,
    fastpath included, gets transformers' default: SDPA where the class has it (never
    holding the S x S scores), eager otherwise (the loader's fastpath falls back the same).
    ``fragmentation_scale`` multiplies the allocator's fragmentation allowance
    (:attr:`probes.alloc_conf.AllocatorConfig.fragmentation_scale`: 1.0 is the measured
    default, ``expandable_segments:True`` lowers it).

    Raises:
        InputError: the estimate has no shape (the config lacks a size it needs), or
            ``mode`` was not estimated.
    """
    shape = estimate.shape
    if shape is None:
        raise InputError(
            f"the workload of {estimate.source} cannot be estimated, only its weights: "
            f"{estimate.shape_error or 'no layer sizes in its config'}"
        )
    if mode not in estimate.modes:
        raise InputError(
            f"mode {mode!r} was not estimated: expected one of {', '.join(estimate.modes)}"
        )
    impl = attention or shape.attention
    weights = estimate.weights_bytes(mode)
    a = activation_bytes(mode)
    notes: list[str] = []
    beyond = positions_note(shape.max_positions, workload.seq_len, workload.new_tokens)
    if beyond is not None:
        notes.append(
            beyond + ": estimated anyway; learned position tables fail there, RoPE models degrade"
        )
    if shape.architecture is None:
        notes.append(
            f"model type {shape.model_type!r} has no workload model here: a generic "
            f"decoder layer is assumed plus a {UNMODELLED_MARGIN:.0%} margin on the "
            "workload part; the estimate is unconfirmed (see docs/memory.md)"
        )
    if shape.attention_source.startswith("unknown"):
        notes.append(f"default attention {shape.attention_source}")
    if shape.encoder_decoder:
        moments = encoder_decoder_moments(shape, mode, workload, a, impl, estimate)
    else:
        moments = decoder_only_moments(
            shape, mode, workload, a, impl, estimate, fragmentation_scale
        )
    quantized = parse_mode(mode).quantized
    sixteen_bit = estimate.parameter_count * 2 + estimate.modes[mode].buffer_bytes
    load_peak = sixteen_bit if quantized else weights
    load_peak += LIBRARY_WORKSPACE_BYTES
    best = max(moments, key=lambda m: m.total)
    residue = 0
    arch = shape.architecture
    if quantized and (arch is None or arch.conv1d):
        residue = QUANTIZED_LOAD_RESIDUE_TENSORS * estimate.largest_parameter * 2
    allocator = best.fragmentation + LIBRARY_WORKSPACE_BYTES + residue
    margin = 0
    command = ""
    if arch is None:
        margin = int(UNMODELLED_MARGIN * (best.total + allocator - best.fragmentation))
        command = UNCONFIRMED_COMMAND.format(
            source=estimate.source,
            mode=mode,
            batch=workload.batch_size,
            seq=workload.seq_len,
            new=workload.new_tokens,
        )
    result = WorkloadEstimate(
        mode=mode,
        workload=workload,
        weights=weights,
        kv_cache=best.kv,
        kv_cache_final=moments[-1].kv_final,
        activations=best.activations,
        logits=best.logits,
        quantization_buffers=best.quantization,
        allocator=allocator,
        load_peak=load_peak,
        cuda_context=cuda_context,
        peak_moment=best.name,
        attention=impl,
        notes=notes,
        confirmed=arch is not None,
        margin=margin,
        measure_with=command,
    )
    return result

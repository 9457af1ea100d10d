"""The moments of a workload's peak, per layout: what is alive at the prefill and at the
end of decoding, for a decoder-only model and for an encoder-decoder one.

The arithmetic behind :func:`probes.memory_workload.estimate_workload` (which adds the
weights, the allocator's extras and the CUDA context, and picks the largest moment).
Pure arithmetic on :class:`probes.model_shape.ModelShape`: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_gpuinfer.probes.memory_moe import moe_bytes
from pytest_gpuinfer.probes.modes import dtype_bytes, parse_mode

if TYPE_CHECKING:
    from pytest_gpuinfer.probes.memory_weights import MemoryEstimate
    from pytest_gpuinfer.probes.memory_workload import Workload
    from pytest_gpuinfer.probes.model_shape import ModelShape

FRAGMENTATION_OF_KV = 0.45
"""Reserved-but-unusable memory at the prefill peak, as a fraction of the prefill K/V: each
layer's K/V are carved out of blocks the previous layer's intermediates freed, so the next
layer's intermediates need fresh segments. Was 0.75 (REFERENCE §9, one 1.1B Llama); the
H100 validation (torch 2.11, 5 architectures, 1 x 8192 and 32 x 1024) measured reserved
minus allocated at 0.23-0.43 x the prefill K/V in fp16/bf16 (0.76 only on a 144 MiB K/V
where the absolute slack is small), so 0.75 over-predicted those rows by 14-23 %."""

FRAGMENTATION_OF_INT8_BUFFERS = 1.0
"""LLM.int8's per-Linear buffers (int8 copies, int32 products) come in as many sizes as
there are Linear shapes, and split the blocks K/V would reuse: on the H100 int8 rows
reserved exceeded allocated by 0.3-0.5 GiB more than in fp16 at 32 x 1024, about one
more copy of the predicted buffers."""

T5_BIAS_MASK_BYTES_PER_SCORE = 13
"""SDPA with a float ``attn_mask`` of B x heads x S x S (T5's position bias) cannot use the
flash kernel; on the H100 it ran torch's math path, which upcasts fp16/bf16 to fp32 and
holds, per score: the fp32 scores (4), ``_safe_softmax``'s fp32 output (4), its bool
``-inf`` mask (1) and its fp32 ``where`` result (4). Measured: 12.7 bytes per score
beyond the bias at 1 x 8192 (16 heads), 10.7 at 32 x 1024."""

LOGITS_FP32_COPIES = 3
"""generate() copies the last logits to fp32, the min_new_tokens processor clones them."""


def activation_bytes(mode: str) -> int:
    """Bytes per activation element: the compute dtype (int8/nf4 compute in fp16)."""
    name = parse_mode(mode).weight_dtype or "float16"
    return dtype_bytes(name) or 2


@dataclass
class Moment:
    name: str
    kv: int
    activations: int
    logits: int
    quantization: int = 0
    fragmentation: int = 0
    kv_final: int = 0

    @property
    def total(self) -> int:
        return self.kv + self.activations + self.logits + self.quantization + self.fragmentation


def _logits(batch: int, vocab: int, a: int) -> int:
    return batch * vocab * (a + 4 * LOGITS_FP32_COPIES)


def _kv_tokens(shape: ModelShape, tokens: int, cap_at_window: bool) -> int:
    """Token slots held over all decoder layers."""
    held = 0
    for window in shape.layer_windows:
        held += min(tokens, window) if (cap_at_window and window) else tokens
    return held


def _quantized_linear(mode: str, tokens: int, width_in: int, width_out: int, a: int) -> int:
    """bitsandbytes' working set for one Linear on ``tokens`` rows beyond its fp16 output."""
    if parse_mode(mode).bits == 8:
        # LLM.int8: |x| and the outlier mask, a cleaned copy, the int8 copy, an int32 product.
        return tokens * width_in * (a + 1 + a + 1) + tokens * width_out * 4
    return 0


def decoder_only_moments(
    shape: ModelShape,
    mode: str,
    workload: Workload,
    a: int,
    attention: str,
    estimate: MemoryEstimate,
    fragmentation_scale: float = 1.0,
) -> list[Moment]:
    b, s, n = workload.batch_size, workload.seq_len, workload.new_tokens
    t = b * s
    h, inter, hd = shape.hidden, shape.intermediate, shape.head_dim
    nh, nkv = shape.heads, shape.kv_heads
    arch = shape.architecture
    per_token_kv = shape.kv_bytes_per_token * a * b
    kv_prefill = _kv_tokens(shape, s, cap_at_window=False) * per_token_kv

    hidden_live = arch.hidden_live if arch is not None else 3
    fp32_hidden = arch.fp32_hidden if arch is not None else 1
    # The model's embeddings, the layer's input, its residual and normed copies.
    base = hidden_live * t * h * a + fp32_hidden * t * h * (4 if a < 4 else 0)
    rotary = 4 * b * s * hd * 4 if (arch is None or arch.rotary) else 0
    windowed = any(w is not None and s > w for w in shape.layer_windows)
    hybrid = windowed and any(w is None for w in shape.layer_windows)

    # Attention: q, k, v, rotary temporaries, the output and its reshaped copy.
    qkv = t * (nh + 2 * nkv) * hd * a
    rope_temps = 2 * t * nh * hd * a if (arch is None or arch.rotary) else 0
    attn_out = 2 * t * nh * hd * a
    scores = 0
    mask = 0
    repeat = 0
    if attention == "eager":
        # Per score: the product (and the next step's copy), softmax's fp32 upcast and
        # output, the cast back; one float mask per kind of layer (sliding, full).
        upcast = 4 if a < 4 else 0
        live = max(2 * a, a + upcast + 4, 4 + a + (a if a < 4 else 0))
        scores = b * nh * s * s * live
        mask = (2 if hybrid else 1) * b * s * s * a
        repeat = 2 * t * nh * hd * a if nkv < nh else 0
    elif windowed:
        mask = 2 * b * s * s  # bool masks: the window's and the combined one
        repeat = 2 * t * nh * hd * a if nkv < nh else 0
    attention_phase = base + qkv + rope_temps + attn_out + scores + mask + repeat

    mlp_live = arch.mlp_live if arch is not None else 3
    mlp_phase = base + mlp_live * t * inter * a
    residual = x_norm = t * h * a
    quant = _dequantized(mode, estimate)
    if shape.experts and shape.sparse_layers:
        mlp_phase = max(mlp_phase, base + moe_bytes(shape, t, a))
    if parse_mode(mode).bits == 8 and shape.experts:
        # The experts stay 16-bit (3-D parameters): LLM.int8 runs on the attention
        # projections (and a shared expert), in the attention phase, beside the layer's
        # input; it costs only what it adds over the larger MoE phase.
        width = max(nh * hd, shape.shared_intermediate)
        int8_phase = base + t * width * a + _quantized_linear(mode, t, h, width, a)
        quant = max(0, int8_phase - max(attention_phase, mlp_phase))
    elif parse_mode(mode).bits == 8:
        # The up projection on x (after the gate's activation when gated), then the down
        # projection on the product: each beside its int8 working set and int32 product.
        before = mlp_live - 2 if shape.gated_mlp else 0
        up = residual + x_norm + (before + 1) * t * inter * a
        up += _quantized_linear(mode, t, h, inter, a)
        down = residual + t * inter * a + t * h * a + _quantized_linear(mode, t, inter, h, a)
        quant = max(0, up - mlp_phase, down - mlp_phase)
    activations = max(attention_phase, mlp_phase) + rotary
    prefill = Moment(
        "prefill",
        kv=kv_prefill,
        activations=activations,
        logits=_logits(b, shape.vocab, a),
        quantization=quant,
        fragmentation=int(fragmentation_scale * FRAGMENTATION_OF_KV * kv_prefill)
        + int(
            fragmentation_scale * FRAGMENTATION_OF_INT8_BUFFERS * quant
            if parse_mode(mode).bits == 8
            else 0
        ),
    )
    kv_final = _kv_tokens(shape, s + n, cap_at_window=True) * per_token_kv
    # One layer's K and V twice while torch.cat grows them; a decode step's own tensors.
    growing = (s + n) * per_token_kv
    step = b * (h * 4 + inter * mlp_live) * a
    if shape.experts and shape.sparse_layers:
        step = max(step, b * h * 4 * a + moe_bytes(shape, b, a))
    decode = Moment(
        "decode",
        kv=kv_final + growing,
        activations=step,
        logits=_logits(b, shape.vocab, a),
        kv_final=kv_final,
    )
    prefill.kv_final = kv_final
    return [prefill, decode] if n > 0 else [prefill]


def _dequantized(mode: str, estimate: MemoryEstimate) -> int:
    """4-bit: bitsandbytes 0.50.2's MatMul4Bit dequantizes the whole weight to the compute
    dtype for each call on more than one row (autograd/_functions.py:
    ``F.dequantize_4bit(B, quant_state).to(A.dtype).t()``), one at a time."""
    if parse_mode(mode).bits == 4:
        return estimate.modes[mode].largest_quantized * activation_bytes(mode)
    return 0


def encoder_decoder_moments(
    shape: ModelShape,
    mode: str,
    workload: Workload,
    a: int,
    attention: str,
    estimate: MemoryEstimate,
) -> list[Moment]:
    b, s, n = workload.batch_size, workload.seq_len, workload.new_tokens
    t = b * s
    h, inter, hd, nh = shape.hidden, shape.intermediate, shape.head_dim, shape.heads
    arch = shape.architecture
    keeps_fp32 = bool(arch and arch.keep_fp32) and (parse_mode(mode).weight_dtype or "float16") == (
        "float16"
    )
    r = 4 if keeps_fp32 else a  # T5's fp32 `wo` makes the residual stream fp32
    residual = t * h * r
    x_norm = t * h * a
    norm_temps = 2 * t * h * 4
    # Relative position bias: (1, heads, S, S) (an all-ones mask adds nothing); while it
    # is computed, six int64 (S, S) bucket temporaries and an fp32 log live at once.
    bias = nh * s * s * a
    buckets = s * s * (6 * 8 + 4)
    qkv = 3 * t * nh * hd * a
    attn_out = 2 * t * nh * hd * a
    scores = 0
    if attention == "eager":
        scores = b * nh * s * s * (2 * a + 4)
    elif arch is not None and arch.bias_mask:
        scores = b * nh * s * s * T5_BIAS_MASK_BYTES_PER_SCORE
    attention_phase = residual + x_norm + qkv + attn_out + scores + norm_temps
    mlp_live = 3 if shape.gated_mlp else (arch.mlp_live if arch else 2)
    down_input = t * inter * 4 if keeps_fp32 else 0
    mlp_phase = residual + x_norm + mlp_live * t * inter * a + down_input + t * h * r
    quant = _dequantized(mode, estimate)
    if parse_mode(mode).bits == 8:
        quant = _quantized_linear(mode, t, h, inter, a)
    encoder = Moment(
        "prefill",
        kv=0,
        activations=max(attention_phase + bias, mlp_phase + bias, residual + buckets),
        logits=0,
        quantization=quant,
    )
    cross = shape.layers * 2 * b * s * nh * hd * a
    self_kv = shape.layers * 2 * b * (n + 1) * nh * hd * a
    decode = Moment(
        "decode",
        kv=cross + self_kv + 2 * b * (n + 1) * nh * hd * a,
        activations=t * h * r + b * nh * s * (2 * a + 4) + b * (h * 4 + inter * 2) * a,
        logits=_logits(b, shape.vocab, a),
        kv_final=cross + self_kv,
    )
    encoder.kv_final = cross + self_kv
    return [encoder, decode]

"""The sizes a workload estimate needs (layers, heads, window...), read from a config dict.

Works on the plain ``config.json`` dict: no torch, no transformers. Facts that are not in
the config but in the model class (does it have SDPA attention? which modules stay fp32?)
come from :data:`ARCHITECTURES`, a table of the model types whose memory behaviour the
workload estimate models; ``tests/test_memory_weights.py`` checks it against the
installed transformers. Model types outside it are built on the meta device instead.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from pytest_gpuinfer.probes.errors import InputError

Norm = Literal["rms", "layer"]
"""rms: computed in fp32 then cast back (Llama-style); layer: one fused kernel."""


@dataclass(frozen=True)
class Architecture:
    """What a model type does that its config does not say."""

    norm: Norm
    gated_mlp: bool
    """gate * up (Llama-style SwiGLU) instead of one up projection."""
    attention: Literal["sdpa", "eager"]
    """transformers' default attention for it: eager materializes B x heads x S x S."""
    conv1d: bool = False
    """GPT-2's Conv1D stores weights (in, out)."""
    rotary: bool = True
    """Holds rotary inv_freq buffers (two fp32 vectors of head_dim / 2)."""
    keep_fp32: tuple[str, ...] = ()
    """``_keep_in_fp32_modules``: fp32 when loading fp16 (and int8/nf4)."""
    encoder_decoder: bool = False
    extra_buffer_bytes: int = 0
    """Other buffers the class registers (Gemma's embedding scale)."""
    mlp_live: int = 3
    """Tensors of B x S x intermediate alive at the MLP's peak: 3 for gate/up/product,
    4 for GPT-2's gelu_new written out in Python, 2 for a plain ReLU."""
    hidden_live: int = 3
    """Tensors of B x S x hidden in the compute dtype alive inside a layer (the model's
    embeddings, the layer's input, residual and normed copies), counted on CPU runs."""
    fp32_hidden: int = 1
    """Of those, extra fp32 copies (RMSNorm's upcast, Gemma's fp32 norms)."""
    tied_default: bool = False
    """The config class's ``tie_word_embeddings`` default."""
    positions_default: int | None = None
    """The config class's ``max_position_embeddings`` default (None: relative/ALiBi)."""
    model_class: str = ""
    """The generation class transformers builds for it."""
    bias_mask: bool = False
    """Its attention adds a learned float bias (T5's relative positions): under SDPA the
    bias becomes a float ``attn_mask``, which rules out the flash kernel."""
    required: tuple[str, ...] = (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "vocab_size",
    )
    """Keys a config must state for the estimate to skip transformers (class defaults are
    only in transformers)."""


_GQA = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
)

ARCHITECTURES: Mapping[str, Architecture] = MappingProxyType(
    {
        "llama": Architecture(
            "rms", True, "sdpa", positions_default=2048, model_class="LlamaForCausalLM"
        ),
        "mistral": Architecture(
            "rms", True, "sdpa", required=_GQA,
            positions_default=131072, model_class="MistralForCausalLM",
        ),
        "qwen2": Architecture(
            "rms", True, "sdpa", required=_GQA,
            positions_default=32768, model_class="Qwen2ForCausalLM",
        ),
        "phi3": Architecture(  # fused gate_up: twice the intermediate width
            "rms", True, "sdpa", mlp_live=4, required=_GQA,
            positions_default=4096, model_class="Phi3ForCausalLM",
        ),
        "gemma2": Architecture(
            "rms", True, "eager", extra_buffer_bytes=4, hidden_live=2, fp32_hidden=3,
            tied_default=True, required=(*_GQA, "head_dim"),
            positions_default=8192, model_class="Gemma2ForCausalLM",
        ),
        "gpt2": Architecture(
            "layer", False, "sdpa", conv1d=True, rotary=False, mlp_live=4, hidden_live=6,
            fp32_hidden=0, tied_default=True,
            required=("n_embd", "n_layer", "n_head", "vocab_size"),
            positions_default=1024, model_class="GPT2LMHeadModel",
        ),
        "opt": Architecture(
            "layer", False, "sdpa", rotary=False, mlp_live=2, hidden_live=4, fp32_hidden=0,
            tied_default=True,
            required=(
                "hidden_size", "ffn_dim", "num_hidden_layers", "num_attention_heads",
                "vocab_size",
            ),
            positions_default=2048, model_class="OPTForCausalLM",
        ),
        "bloom": Architecture(
            "layer", False, "eager", rotary=False, mlp_live=4, hidden_live=4, fp32_hidden=0,
            tied_default=True, required=("hidden_size", "n_layer", "n_head", "vocab_size"),
            model_class="BloomForCausalLM",
        ),
        "t5": Architecture(
            "rms", False, "sdpa", rotary=False, keep_fp32=("wo",), encoder_decoder=True,
            mlp_live=2, tied_default=True, bias_mask=True,
            required=("d_model", "d_kv", "d_ff", "num_layers", "num_heads", "vocab_size"),
            model_class="T5ForConditionalGeneration",
        ),
    }
)  # fmt: skip
"""Model types whose workload the estimate models, by ``model_type``."""

EMBEDDING_NAMES = frozenset(
    {
        "embed_tokens",
        "wte",
        "wpe",
        "shared",
        "word_embeddings",
        "embed_positions",
        "relative_attention_bias",
        "position_embeddings",
        "token_type_embeddings",
    }
)
"""Last module-name components of ``nn.Embedding`` layers in the known architectures."""

OUTPUT_EMBEDDING = "lm_head"

_ALIASES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "hidden": ("hidden_size", "n_embd", "d_model"),
        "layers": ("num_hidden_layers", "n_layer", "num_layers"),
        "heads": ("num_attention_heads", "n_head", "num_heads"),
        "intermediate": ("intermediate_size", "n_inner", "ffn_dim", "d_ff"),
        "positions": ("max_position_embeddings", "n_positions"),
    }
)


@dataclass(frozen=True)
class ModelShape:
    """The sizes that decide a workload's memory, for the decoder (and encoder) stack."""

    model_type: str
    hidden: int
    layers: int
    """Decoder layers (the only stack of a decoder-only model)."""
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    max_positions: int | None
    """Longest sequence the positions allow; None for relative/ALiBi positions."""
    layer_windows: tuple[int | None, ...]
    """Per decoder layer: its sliding window, None for full attention."""
    encoder_layers: int = 0
    architecture: Architecture | None = None
    attention: str = "sdpa"
    attn_softcapping: bool = False
    tie_word_embeddings: bool = False
    gated_mlp: bool = False
    extras: Mapping[str, Any] = field(default_factory=dict)

    @property
    def encoder_decoder(self) -> bool:
        return self.encoder_layers > 0

    @property
    def kv_bytes_per_token(self) -> int:
        """Elements of K and V one token adds to one layer's cache (multiply by dtype bytes)."""
        return 2 * self.kv_heads * self.head_dim


def _first(data: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = data.get(key)
        if value is not None:
            return value
    return None


def _positive(data: Mapping[str, Any], what: str, keys: tuple[str, ...], where: str) -> int:
    value = _first(data, keys)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InputError(
            f"config '{where}' has {keys[0]}={value!r}: expected a positive integer "
            f"({what}; also read as {', '.join(keys[1:]) or 'nothing else'})"
        )
    return value


_SUPPORTS_SDPA = re.compile(r"^\s+_supports_sdpa\s*=\s*(True|False)", re.MULTILINE)


def installed_attention(model_type: str, arch: Architecture | None) -> str:
    """The attention the installed transformers gives ``model_type`` by default: "sdpa"
    where its model class sets ``_supports_sdpa = True``, else "eager".

    Read from the modeling file's text (no torch import). Versions differ: Gemma 2 has
    SDPA in transformers 5.17 (the H100 validation ran it so: its 1 x 8192 prefill held
    no S x S scores) and lost it again by 5.23 ("sdpa does not support softcapping").
    Without transformers or the file, the table's default.
    """
    default = arch.attention if arch else "sdpa"
    if not re.fullmatch(r"[a-z0-9_]+", model_type):
        return default
    try:
        spec = importlib.util.find_spec("transformers")
    except (ImportError, ValueError):
        return default
    if spec is None or not spec.submodule_search_locations:
        return default
    root = Path(next(iter(spec.submodule_search_locations)))
    path = root / "models" / model_type / f"modeling_{model_type}.py"
    try:
        found = _SUPPORTS_SDPA.search(path.read_text(encoding="utf-8"))
    except OSError:
        return default
    if found is None:
        return default
    return "sdpa" if found.group(1) == "True" else "eager"


def model_shape(data: Mapping[str, Any], where: str, *, attention: str | None = None) -> ModelShape:
    """The :class:`ModelShape` of a full config dict (as ``save_pretrained`` writes it, or
    ``config.to_dict()``). ``attention`` overrides the architecture's default.

    Raises:
        InputError: a size the estimate needs is missing or not a positive integer.
    """
    model_type = str(data.get("model_type", ""))
    arch = ARCHITECTURES.get(model_type)
    hidden = _positive(data, "hidden size", _ALIASES["hidden"], where)
    heads = _positive(data, "attention heads", _ALIASES["heads"], where)
    encoder_decoder = bool(data.get("is_encoder_decoder", arch.encoder_decoder if arch else False))
    if encoder_decoder:
        encoder_layers = _positive(data, "encoder layers", _ALIASES["layers"], where)
        layers = _first(data, ("num_decoder_layers",)) or encoder_layers
    else:
        encoder_layers = 0
        layers = _positive(data, "layers", _ALIASES["layers"], where)
    kv_heads = _first(data, ("num_key_value_heads", "n_head_kv", "num_kv_heads")) or heads
    if data.get("multi_query") is True:
        kv_heads = 1
    head_dim = _first(data, ("head_dim", "d_kv")) or hidden // heads
    intermediate = _first(data, _ALIASES["intermediate"]) or 4 * hidden
    vocab = _positive(data, "vocabulary size", ("vocab_size",), where)
    positions = _first(data, _ALIASES["positions"])
    windows = _layer_windows(data, int(layers))
    gated = arch.gated_mlp if arch else False
    if model_type == "t5":
        gated = str(data.get("feed_forward_proj", "")).startswith("gated")
    return ModelShape(
        model_type=model_type,
        hidden=hidden,
        layers=int(layers),
        heads=heads,
        kv_heads=int(kv_heads),
        head_dim=int(head_dim),
        intermediate=int(intermediate),
        vocab=vocab,
        max_positions=(
            int(positions)
            if isinstance(positions, int)
            else (arch.positions_default if arch else None)
        ),
        layer_windows=windows,
        encoder_layers=int(encoder_layers),
        architecture=arch,
        attention=attention or installed_attention(model_type, arch),
        attn_softcapping=data.get("attn_logit_softcapping") is not None,
        tie_word_embeddings=bool(
            data.get("tie_word_embeddings", arch.tied_default if arch else False)
        ),
        gated_mlp=gated,
        extras={
            k: data[k]
            for k in ("word_embed_proj_dim", "relative_attention_num_buckets")
            if k in data
        },
    )


def _layer_windows(data: Mapping[str, Any], layers: int) -> tuple[int | None, ...]:
    # As transformers' get_layer_types_and_kwargs: layer_types if given, else every layer
    # slides when the config has a sliding_window (Mistral).
    window = data.get("sliding_window")
    if data.get("use_sliding_window") is False:
        window = None
    types = data.get("layer_types")
    if isinstance(types, list) and len(types) == layers:
        return tuple(
            window if isinstance(window, int) and "sliding" in str(t) else None for t in types
        )
    if isinstance(window, int) and window > 0:
        return (window,) * layers
    return (None,) * layers

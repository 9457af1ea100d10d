"""The sizes a workload estimate needs (layers, heads, window...), read from a config dict.

Works on the plain ``config.json`` dict: no torch, no transformers. Facts that are not in
the config but in the model class (does it have SDPA attention? which modules stay fp32?)
come from :data:`ARCHITECTURES`, a table of the model types whose memory behaviour the
workload estimate models; ``tests/test_memory_weights.py`` checks it against the
installed transformers. Facts that change between transformers releases (default
attention, the config class's defaults) are not tabled: :mod:`probes.memory_class_facts`
reads them from the installed files. Mixture-of-experts sizes (experts, top-k, expert and
shared-expert widths, which layers are sparse) are read from any config that states them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from pytest_gpuinfer.probes.errors import InputError
from pytest_gpuinfer.probes.memory_class_facts import Unknown, class_facts

Norm = Literal["rms", "layer"]
"""rms: computed in fp32 then cast back (Llama-style); layer: one fused kernel."""


@dataclass(frozen=True)
class Architecture:
    """What a model type does that its config does not say."""

    norm: Norm
    gated_mlp: bool
    """gate * up (Llama-style SwiGLU) instead of one up projection."""
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
    only in transformers); a MoE type also needs its expert count under one of
    :data:`EXPERT_COUNT_KEYS` (qwen3_moe saves ``num_local_experts`` in transformers 5.23
    through its ``attribute_map``, hub configs say ``num_experts``)."""
    moe: bool = False
    """Its MLP is a sparse mixture of experts (transformers 5: the experts are 3-D
    ``nn.Parameter`` tensors, which bitsandbytes does not convert)."""
    qkv_bias_default: bool = False
    """q/k/v projections carry a bias unless the config says otherwise (Qwen2, Qwen2-MoE)."""


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
        "llama": Architecture("rms", True, model_class="LlamaForCausalLM"),
        "mistral": Architecture("rms", True, required=_GQA, model_class="MistralForCausalLM"),
        "qwen2": Architecture(
            "rms", True, required=_GQA, model_class="Qwen2ForCausalLM", qkv_bias_default=True
        ),
        "phi3": Architecture(  # fused gate_up: twice the intermediate width
            "rms", True, mlp_live=4, required=_GQA, model_class="Phi3ForCausalLM",
        ),
        "gemma2": Architecture(
            "rms", True, extra_buffer_bytes=4, hidden_live=2, fp32_hidden=3,
            required=(*_GQA, "head_dim"), model_class="Gemma2ForCausalLM",
        ),
        "gpt2": Architecture(
            "layer", False, conv1d=True, rotary=False, mlp_live=4, hidden_live=6,
            fp32_hidden=0, required=("n_embd", "n_layer", "n_head", "vocab_size"),
            model_class="GPT2LMHeadModel",
        ),
        "opt": Architecture(
            "layer", False, rotary=False, mlp_live=2, hidden_live=4, fp32_hidden=0,
            required=(
                "hidden_size", "ffn_dim", "num_hidden_layers", "num_attention_heads",
                "vocab_size",
            ),
            model_class="OPTForCausalLM",
        ),
        "bloom": Architecture(
            "layer", False, rotary=False, mlp_live=4, hidden_live=4, fp32_hidden=0,
            required=("hidden_size", "n_layer", "n_head", "vocab_size"),
            model_class="BloomForCausalLM",
        ),
        "t5": Architecture(
            "rms", False, rotary=False, keep_fp32=("wo",), encoder_decoder=True,
            mlp_live=2, bias_mask=True,
            required=("d_model", "d_kv", "d_ff", "num_layers", "num_heads", "vocab_size"),
            model_class="T5ForConditionalGeneration",
        ),
        "mixtral": Architecture(
            "rms", True, moe=True, required=(*_GQA, "num_experts_per_tok"),
            model_class="MixtralForCausalLM",
        ),
        "qwen2_moe": Architecture(
            "rms", True, moe=True, qkv_bias_default=True,
            required=(
                *_GQA, "num_experts_per_tok", "moe_intermediate_size",
                "shared_expert_intermediate_size",
            ),
            model_class="Qwen2MoeForCausalLM",
        ),
        "qwen3_moe": Architecture(
            "rms", True, moe=True,
            required=(
                *_GQA, "num_experts_per_tok", "moe_intermediate_size", "head_dim",
            ),
            model_class="Qwen3MoeForCausalLM",
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
    attention_source: str = ""
    """Where the default attention was read (``modeling_x.py:line``), or why it is unknown."""
    experts: int = 0
    """Routed experts per sparse layer (0: a dense MLP)."""
    experts_per_token: int = 0
    """Experts each token is routed to (top-k)."""
    expert_intermediate: int = 0
    """One expert's MLP width."""
    shared_intermediate: int = 0
    """The shared expert's MLP width, run on every token beside the routed ones (0: none)."""
    sparse_layers: int = 0
    """Decoder layers whose MLP is the mixture of experts (the rest are dense)."""

    @property
    def encoder_decoder(self) -> bool:
        return self.encoder_layers > 0

    @property
    def kv_bytes_per_token(self) -> int:
        """Elements of K and V one token adds to one layer's cache (multiply by dtype bytes)."""
        return 2 * self.kv_heads * self.head_dim


def declared_positions(data: Mapping[str, Any]) -> int | None:
    """The longest sequence a config's positions allow, as it states it (None: unstated)."""
    value = _first(data, _ALIASES["positions"])
    return value if isinstance(value, int) and not isinstance(value, bool) else None


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


def installed_attention(model_type: str) -> tuple[str, str]:
    """The attention the installed transformers gives ``model_type`` by default, and where
    that was read: "sdpa" where its model class sets ``_supports_sdpa = True``, else
    "eager" (:func:`probes.memory_class_facts.class_facts`). Versions differ: Gemma 2 has
    SDPA in transformers 5.17 and lost it by 5.23 ("sdpa does not support softcapping").
    When it cannot be read (no transformers, no modeling file) the answer is "eager", the
    attention that holds more memory (the B x heads x S x S scores), so the estimate
    errs high, and the source says "unknown, because ...".
    """
    facts = class_facts(model_type)
    if isinstance(facts.attention, Unknown):
        return "eager", f"{facts.attention}; eager assumed (it holds more memory)"
    return facts.attention, facts.attention_source


def class_default(model_type: str, keys: tuple[str, ...], fallback: Any) -> Any:
    """The installed config class's default for the first of ``keys`` it declares."""
    facts = class_facts(model_type)
    for key in keys:
        value = facts.default(key)
        if not isinstance(value, Unknown):
            return value
    return fallback


EXPERT_COUNT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")


def states_experts(data: Mapping[str, Any]) -> bool:
    """The config gives its routed expert count."""
    return isinstance(_first(data, EXPERT_COUNT_KEYS), int)


def _moe_sizes(data: Mapping[str, Any], layers: int, intermediate: int) -> dict[str, int]:
    """Experts, top-k and widths from a config's own keys, for any MoE decoder: Mixtral
    (``num_local_experts``, expert width ``intermediate_size``), Qwen2/3-MoE
    (``num_experts``, ``moe_intermediate_size``, ``shared_expert_intermediate_size``,
    ``decoder_sparse_step``, ``mlp_only_layers``), DeepSeek (``n_routed_experts``,
    ``n_shared_experts`` x ``moe_intermediate_size``, ``first_k_dense_replace``)."""
    experts = _first(data, EXPERT_COUNT_KEYS)
    top_k = _first(data, ("num_experts_per_tok", "moe_topk", "top_k"))
    if not (isinstance(experts, int) and isinstance(top_k, int) and experts > 1 and top_k > 0):
        return {}
    width = int(_first(data, ("moe_intermediate_size",)) or intermediate)
    shared = _first(data, ("shared_expert_intermediate_size",))
    if shared is None and isinstance(data.get("n_shared_experts"), int):
        shared = data["n_shared_experts"] * width
    dense = set(data.get("mlp_only_layers") or ())
    step = data.get("decoder_sparse_step") or 1
    first_dense = data.get("first_k_dense_replace") or 0
    sparse = sum(
        1 for i in range(layers) if i not in dense and i >= first_dense and (i + 1) % int(step) == 0
    )
    return {
        "experts": experts,
        "experts_per_token": min(top_k, experts),
        "expert_intermediate": width,
        "shared_intermediate": int(shared or 0),
        "sparse_layers": sparse,
    }


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
    if positions is None and arch is not None:
        # The config class's default (llama 2048, mixtral 4096 * 32): read, not tabled.
        positions = class_default(model_type, _ALIASES["positions"], None)
    # Untied is the fallback without transformers: it counts lm_head, erring high.
    tied_default = (
        bool(class_default(model_type, ("tie_word_embeddings",), False)) if arch else False
    )
    default_attention, attention_source = installed_attention(model_type)
    if attention is not None and attention != default_attention:
        attention_source = "given by the caller"
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
        max_positions=int(positions) if isinstance(positions, int) else None,
        layer_windows=windows,
        encoder_layers=int(encoder_layers),
        architecture=arch,
        attention=attention or default_attention,
        attention_source=attention_source,
        attn_softcapping=data.get("attn_logit_softcapping") is not None,
        tie_word_embeddings=bool(data.get("tie_word_embeddings", tied_default)),
        gated_mlp=gated,
        extras={
            k: data[k]
            for k in ("word_embed_proj_dim", "relative_attention_num_buckets")
            if k in data
        },
        **_moe_sizes(data, int(layers), int(intermediate)),
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

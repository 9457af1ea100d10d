"""The parameter list a known architecture's config implies, without building the model.

For a bare ``config.json`` (no weights) of a model type in
:data:`probes.model_shape.ARCHITECTURES`, this writes out the tensors transformers would
create, named as in a checkpoint, so the weights estimate runs on them exactly as on
safetensors headers: no torch, milliseconds (a 70B config from a cold start included).
``tests/test_memory_weights.py`` checks every architecture against the meta-device build.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pytest_gpuinfer.probes.model_shape import ModelShape
from pytest_gpuinfer.probes.safetensors_header import HeaderTensor

_Spec = list[tuple[str, tuple[int, ...]]]


def _t(spec: _Spec, name: str, *shape: int) -> None:
    spec.append((name, tuple(shape)))


def _linear(spec: _Spec, name: str, out: int, into: int, bias: bool) -> None:
    _t(spec, f"{name}.weight", out, into)
    if bias:
        _t(spec, f"{name}.bias", out)


def _norm(spec: _Spec, name: str, width: int, bias: bool = False) -> None:
    _t(spec, f"{name}.weight", width)
    if bias:
        _t(spec, f"{name}.bias", width)


def _llama_like(data: Mapping[str, Any], s: ModelShape) -> _Spec:
    spec: _Spec = []
    h, hd, inter = s.hidden, s.head_dim, s.intermediate
    arch = s.architecture
    qkv_default = bool(arch and arch.qkv_bias_default)
    attention_bias = bool(data.get("attention_bias", False)) or s.model_type == "qwen2"
    qkv_bias = bool(data.get("qkv_bias", qkv_default)) or attention_bias
    mlp_bias = bool(data.get("mlp_bias", False))
    sparse = _sparse_layers(data, s)
    _t(spec, "model.embed_tokens.weight", s.vocab, h)
    for i in range(s.layers):
        p = f"model.layers.{i}"
        if s.model_type == "phi3":
            _linear(spec, f"{p}.self_attn.qkv_proj", (s.heads + 2 * s.kv_heads) * hd, h, False)
            _linear(spec, f"{p}.self_attn.o_proj", h, s.heads * hd, False)
            _linear(spec, f"{p}.mlp.gate_up_proj", 2 * inter, h, False)
            _linear(spec, f"{p}.mlp.down_proj", h, inter, False)
        else:
            _linear(spec, f"{p}.self_attn.q_proj", s.heads * hd, h, qkv_bias)
            _linear(spec, f"{p}.self_attn.k_proj", s.kv_heads * hd, h, qkv_bias)
            _linear(spec, f"{p}.self_attn.v_proj", s.kv_heads * hd, h, qkv_bias)
            o_bias = attention_bias and s.model_type != "qwen2"
            _linear(spec, f"{p}.self_attn.o_proj", h, s.heads * hd, o_bias)
            if s.model_type == "qwen3_moe":
                _norm(spec, f"{p}.self_attn.q_norm", hd)
                _norm(spec, f"{p}.self_attn.k_norm", hd)
            if i in sparse:
                _experts(spec, p, s)
            else:
                _linear(spec, f"{p}.mlp.gate_proj", inter, h, mlp_bias)
                _linear(spec, f"{p}.mlp.up_proj", inter, h, mlp_bias)
                _linear(spec, f"{p}.mlp.down_proj", h, inter, mlp_bias)
        norms = ["input_layernorm", "post_attention_layernorm"]
        if s.model_type == "gemma2":
            norms += ["pre_feedforward_layernorm", "post_feedforward_layernorm"]
        for norm in norms:
            _norm(spec, f"{p}.{norm}", h)
    _norm(spec, "model.norm", h)
    if not s.tie_word_embeddings:
        _t(spec, "lm_head.weight", s.vocab, h)
    return spec


def _sparse_layers(data: Mapping[str, Any], s: ModelShape) -> set[int]:
    # As Qwen2MoeDecoderLayer: sparse where not in mlp_only_layers and (i + 1) is a
    # multiple of decoder_sparse_step; Mixtral: every layer.
    if not s.experts:
        return set()
    dense = set(data.get("mlp_only_layers") or ())
    step = int(data.get("decoder_sparse_step") or 1)
    return {i for i in range(s.layers) if i not in dense and (i + 1) % step == 0}


def _experts(spec: _Spec, p: str, s: ModelShape) -> None:
    """One sparse MLP as ``save_pretrained`` writes it (transformers 5 saves the original
    per-expert layout and merges it into 3-D ``experts.gate_up_proj`` / ``down_proj``
    parameters on load); the router is a plain parameter of E x hidden."""
    h, width = s.hidden, s.expert_intermediate
    if s.model_type == "mixtral":
        block = f"{p}.block_sparse_moe"
        names = ("w1", "w3", "w2")  # gate, up, down
    else:
        block = f"{p}.mlp"
        names = ("gate_proj", "up_proj", "down_proj")
    _t(spec, f"{block}.gate.weight", s.experts, h)
    for e in range(s.experts):
        _t(spec, f"{block}.experts.{e}.{names[0]}.weight", width, h)
        _t(spec, f"{block}.experts.{e}.{names[1]}.weight", width, h)
        _t(spec, f"{block}.experts.{e}.{names[2]}.weight", h, width)
    if s.shared_intermediate:
        shared = s.shared_intermediate
        _linear(spec, f"{block}.shared_expert.gate_proj", shared, h, False)
        _linear(spec, f"{block}.shared_expert.up_proj", shared, h, False)
        _linear(spec, f"{block}.shared_expert.down_proj", h, shared, False)
        _linear(spec, f"{block}.shared_expert_gate", 1, h, False)


def _gpt2(data: Mapping[str, Any], s: ModelShape) -> _Spec:
    spec: _Spec = []
    h, inter = s.hidden, s.intermediate
    _t(spec, "transformer.wte.weight", s.vocab, h)
    _t(spec, "transformer.wpe.weight", s.max_positions or 1024, h)
    for i in range(s.layers):
        p = f"transformer.h.{i}"
        _norm(spec, f"{p}.ln_1", h, bias=True)
        # Conv1D stores (in, out).
        _t(spec, f"{p}.attn.c_attn.weight", h, 3 * h)
        _t(spec, f"{p}.attn.c_attn.bias", 3 * h)
        _t(spec, f"{p}.attn.c_proj.weight", h, h)
        _t(spec, f"{p}.attn.c_proj.bias", h)
        _norm(spec, f"{p}.ln_2", h, bias=True)
        _t(spec, f"{p}.mlp.c_fc.weight", h, inter)
        _t(spec, f"{p}.mlp.c_fc.bias", inter)
        _t(spec, f"{p}.mlp.c_proj.weight", inter, h)
        _t(spec, f"{p}.mlp.c_proj.bias", h)
    _norm(spec, "transformer.ln_f", h, bias=True)
    if not s.tie_word_embeddings:
        _t(spec, "lm_head.weight", s.vocab, h)
    return spec


def _opt(data: Mapping[str, Any], s: ModelShape) -> _Spec:
    spec: _Spec = []
    h, inter = s.hidden, s.intermediate
    projected = int(data.get("word_embed_proj_dim") or h)
    bias = bool(data.get("enable_bias", True))
    _t(spec, "model.decoder.embed_tokens.weight", s.vocab, projected)
    _t(spec, "model.decoder.embed_positions.weight", (s.max_positions or 2048) + 2, h)
    if projected != h:
        _linear(spec, "model.decoder.project_out", projected, h, False)
        _linear(spec, "model.decoder.project_in", h, projected, False)
    before = bool(data.get("do_layer_norm_before", True))
    if before and not data.get("_remove_final_layer_norm", False):
        _norm(
            spec,
            "model.decoder.final_layer_norm",
            h,
            bias=bool(data.get("layer_norm_elementwise_affine", True)),
        )
    for i in range(s.layers):
        p = f"model.decoder.layers.{i}"
        for name in ("k_proj", "v_proj", "q_proj", "out_proj"):
            _linear(spec, f"{p}.self_attn.{name}", h, h, bias)
        _norm(spec, f"{p}.self_attn_layer_norm", h, bias=True)
        _linear(spec, f"{p}.fc1", inter, h, bias)
        _linear(spec, f"{p}.fc2", h, inter, bias)
        _norm(spec, f"{p}.final_layer_norm", h, bias=True)
    if not s.tie_word_embeddings:
        _t(spec, "lm_head.weight", s.vocab, projected)
    return spec


def _bloom(data: Mapping[str, Any], s: ModelShape) -> _Spec:
    spec: _Spec = []
    h = s.hidden
    _t(spec, "transformer.word_embeddings.weight", s.vocab, h)
    _norm(spec, "transformer.word_embeddings_layernorm", h, bias=True)
    for i in range(s.layers):
        p = f"transformer.h.{i}"
        _norm(spec, f"{p}.input_layernorm", h, bias=True)
        _linear(spec, f"{p}.self_attention.query_key_value", 3 * h, h, True)
        _linear(spec, f"{p}.self_attention.dense", h, h, True)
        _norm(spec, f"{p}.post_attention_layernorm", h, bias=True)
        _linear(spec, f"{p}.mlp.dense_h_to_4h", 4 * h, h, True)
        _linear(spec, f"{p}.mlp.dense_4h_to_h", h, 4 * h, True)
    _norm(spec, "transformer.ln_f", h, bias=True)
    if not s.tie_word_embeddings:
        _t(spec, "lm_head.weight", s.vocab, h)
    return spec


def _t5(data: Mapping[str, Any], s: ModelShape) -> _Spec:
    spec: _Spec = []
    h, inter = s.hidden, s.intermediate
    inner = s.heads * s.head_dim
    buckets = int(data.get("relative_attention_num_buckets", 32))
    _t(spec, "shared.weight", s.vocab, h)

    def attention(prefix: str, relative: bool) -> None:
        for name in ("q", "k", "v"):
            _linear(spec, f"{prefix}.{name}", inner, h, False)
        _linear(spec, f"{prefix}.o", h, inner, False)
        if relative:
            _t(spec, f"{prefix}.relative_attention_bias.weight", buckets, s.heads)

    def feed_forward(prefix: str) -> None:
        if s.gated_mlp:
            _linear(spec, f"{prefix}.DenseReluDense.wi_0", inter, h, False)
            _linear(spec, f"{prefix}.DenseReluDense.wi_1", inter, h, False)
        else:
            _linear(spec, f"{prefix}.DenseReluDense.wi", inter, h, False)
        _linear(spec, f"{prefix}.DenseReluDense.wo", h, inter, False)
        _norm(spec, f"{prefix}.layer_norm", h)

    for i in range(s.encoder_layers):
        p = f"encoder.block.{i}.layer"
        attention(f"{p}.0.SelfAttention", i == 0)
        _norm(spec, f"{p}.0.layer_norm", h)
        feed_forward(f"{p}.1")
    _norm(spec, "encoder.final_layer_norm", h)
    for i in range(s.layers):
        p = f"decoder.block.{i}.layer"
        attention(f"{p}.0.SelfAttention", i == 0)
        _norm(spec, f"{p}.0.layer_norm", h)
        attention(f"{p}.1.EncDecAttention", False)
        _norm(spec, f"{p}.1.layer_norm", h)
        feed_forward(f"{p}.2")
    _norm(spec, "decoder.final_layer_norm", h)
    if not s.tie_word_embeddings:
        _t(spec, "lm_head.weight", s.vocab, h)
    return spec


_BUILDERS: Mapping[str, Callable[[Mapping[str, Any], ModelShape], _Spec]] = {
    "llama": _llama_like,
    "mistral": _llama_like,
    "qwen2": _llama_like,
    "phi3": _llama_like,
    "gemma2": _llama_like,
    "mixtral": _llama_like,
    "qwen2_moe": _llama_like,
    "qwen3_moe": _llama_like,
    "gpt2": _gpt2,
    "opt": _opt,
    "bloom": _bloom,
    "t5": _t5,
}


def config_tensors(data: Mapping[str, Any], shape: ModelShape) -> list[HeaderTensor] | None:
    """The tensors of the model ``data`` describes, as a checkpoint would list them
    (F32, tied copies left out); None for a model type this module does not know."""
    builder = _BUILDERS.get(shape.model_type)
    if builder is None:
        return None
    return [HeaderTensor(name, "F32", dims, "config.json") for name, dims in builder(data, shape)]

"""The working memory of a sparse mixture-of-experts block, as transformers 5 runs it.

Pure arithmetic on :class:`probes.model_shape.ModelShape` (no torch); used by
:mod:`probes.memory_moments` for each MoE layer's prefill and decode step.
"""

from __future__ import annotations

from pytest_gpuinfer.probes.model_shape import ModelShape

MOE_DISPATCH_BYTES_PER_ROW = 8 * 4 + 4
"""Per routed (token, expert) row in transformers' grouped experts (integrations/moe.py,
grouped_mm_experts_forward): the sorted ``expert_ids_g``, ``perm``, ``inv_perm`` and the
``arange`` it is filled from (int64 each) and ``sample_weights_g`` (fp32)."""


def moe_bytes(shape: ModelShape, tokens: int, a: int) -> int:
    """Bytes alive at the peak of one sparse MoE block on ``tokens`` tokens, beyond the
    layer's hidden states (transformers 5.23's default ``experts_implementation`` is
    "grouped_mm", modeling_utils.py ``get_correct_experts_implementation``; the function
    is integrations/moe.py ``grouped_mm_experts_forward``). R = tokens x top-k routed rows:

    * router (mixtral/modeling_mixtral.py ``MixtralTopKRouter.forward``): logits
      tokens x E in the compute dtype, softmax in fp32, top-k values (fp32) and indices
      (int64);
    * dispatch: ``hidden_states[perm // top_k]`` gathers R x hidden (alive to the end of
      the function), plus :data:`MOE_DISPATCH_BYTES_PER_ROW` of sort/permutation indices;
    * experts: the up projection R x 2W (``gate_up_proj``), then ``act(gate) * up``
      (``_default_apply_gate``) adds R x W twice while it is alive: hidden + 4W per row;
      the down projection holds hidden + W + hidden; the combine holds the gathered
      input, the down output, ``proj_out * sample_weights`` and its ``[inv_perm]`` copy:
      4 x hidden per row, then ``.view(tokens, top_k, hidden).sum(1)``;
    * a shared expert (qwen2_moe ``Qwen2MoeSparseMoeBlock.forward``) runs first: its
      gate/up/product (3 x its width per token) then its tokens x hidden output stays
      alive beside the routed experts.
    """
    h, w, k, e = shape.hidden, shape.expert_intermediate, shape.experts_per_token, shape.experts
    rows = tokens * k
    router = tokens * e * (a + 4) + tokens * k * (4 + 8)
    per_row = max(h + 4 * w, 2 * h + w, 4 * h) * a + MOE_DISPATCH_BYTES_PER_ROW
    routed = router + rows * per_row
    if not shape.shared_intermediate:
        return routed
    shared_mlp = 3 * tokens * shape.shared_intermediate * a
    return max(shared_mlp, tokens * h * a + routed)

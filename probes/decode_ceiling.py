"""The bandwidth-bound decode ceiling: how fast a GPU can at best generate, from its memory.

A decode step reads every weight byte and the whole KV cache once (REFERENCE section 10,
"The floor"), so::

    tokens/s per sequence <= bandwidth / (weight bytes + KV cache bytes)
    tokens/s of the batch <= batch_size x that

with bandwidth the datasheet peak (``memory_bandwidth_gb_per_s``, 1 GB = 10**9 bytes) and
the KV cache at the last step (``seq_len + new_tokens`` tokens of every sequence: the
slowest step). A model split over GPUs with ``device_map="auto"`` runs its layers one GPU
after the other, so one GPU's bandwidth bounds it too. Real decoding reaches a fraction of
this (the model bandwidth utilisation); small models are bound by kernel launches instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FORMULA = "tokens/s <= batch x bandwidth / (weights + KV cache at the last step)"


@dataclass(frozen=True)
class DecodeCeiling:
    bandwidth_gb_per_s: float
    weights_bytes: int
    kv_cache_bytes: int | None
    """None: the workload could not be estimated; the ceiling counts the weights only."""
    batch_size: int

    @property
    def bytes_per_step(self) -> int:
        return self.weights_bytes + (self.kv_cache_bytes or 0)

    @property
    def per_sequence_tokens_per_s(self) -> float:
        return self.bandwidth_gb_per_s * 1e9 / self.bytes_per_step if self.bytes_per_step else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.batch_size * self.per_sequence_tokens_per_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "formula": FORMULA,
            "bandwidth_gb_per_s": self.bandwidth_gb_per_s,
            "weights_bytes": self.weights_bytes,
            "kv_cache_bytes": self.kv_cache_bytes,
            "bytes_per_step": self.bytes_per_step,
            "batch_size": self.batch_size,
            "per_sequence_tokens_per_s": round(self.per_sequence_tokens_per_s, 1),
            "tokens_per_s": round(self.tokens_per_s, 1),
        }


def decode_ceiling(
    bandwidth_gb_per_s: float, weights_bytes: int, kv_cache_bytes: int | None, batch_size: int
) -> DecodeCeiling:
    return DecodeCeiling(bandwidth_gb_per_s, weights_bytes, kv_cache_bytes, batch_size)

"""Config defaults read from transformers' source, in both eras' shapes (no import)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_gpuinfer.probes import memory_class_facts
from pytest_gpuinfer.probes.memory_class_facts import Unknown, class_facts

V4_CONFIG = """
class ToyConfig(PretrainedConfig):
    model_type = "toy"

    def __init__(self, vocab_size=32000, max_position_embeddings=2048, rope=None, **kwargs):
        super().__init__(**kwargs)
"""
V5_CONFIG = """
class ToyConfig(PreTrainedConfig):
    max_position_embeddings: int = 4096 * 32
    tie_word_embeddings: bool = False
"""
V4_BASE = """
class PretrainedConfig:
    def __init__(self, **kwargs):
        self.tie_word_embeddings = kwargs.pop("tie_word_embeddings", True)
"""


def _transformers(tmp_path: Path, config: str, base: str) -> Path:
    root = tmp_path / "transformers"
    (root / "models" / "toy").mkdir(parents=True)
    (root / "__init__.py").write_text('__version__ = "9.9.9"\n')
    (root / "configuration_utils.py").write_text(base)
    (root / "models" / "toy" / "configuration_toy.py").write_text(config)
    (root / "models" / "toy" / "modeling_toy.py").write_text(
        "class ToyModel:\n    _supports_sdpa = True\n"
    )
    return root


@pytest.mark.parametrize(
    ("config", "positions", "tied"),
    [(V4_CONFIG, 2048, True), (V5_CONFIG, 131072, False)],
    ids=["transformers-4-keywords", "transformers-5-fields"],
)
def test_defaults_come_from_the_class_then_the_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: str, positions: int, tied: bool
) -> None:
    root = _transformers(tmp_path, config, V4_BASE)
    monkeypatch.setattr(memory_class_facts, "_transformers_root", lambda: root)
    class_facts.cache_clear()
    try:
        facts = class_facts("toy")
        assert facts.default("max_position_embeddings") == positions
        assert facts.default("tie_word_embeddings") is tied
        assert facts.attention == "sdpa"
        assert isinstance(facts.default("rope_theta"), Unknown)
    finally:
        class_facts.cache_clear()

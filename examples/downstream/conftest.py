"""Shared fixtures: the model under test, its full-precision reference, a tiny encoder.

``model_path`` and ``reference`` come from the package (``pytest_gpuinfer.plugin.reference``):
the model is ``--gpuinfer-model`` / ``GPUINFER_MODEL`` when set, else the shipped tiny
trained LM; the reference is that model in fp32 with eager attention, loaded once.

Nothing here touches CUDA at import time: the plugin pins xdist workers to their GPUs in
its own pytest_configure, which runs after conftest files are imported.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_gpuinfer.tiny_models import write_tiny_model

pytest_plugins = ["pytest_gpuinfer.plugin.reference"]


@pytest.fixture(scope="session")
def encoder_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT-shaped encoder, written locally (no hub access)."""
    return write_tiny_model("bert", tmp_path_factory.mktemp("encoder") / "bert", task="encoder")

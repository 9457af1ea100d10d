"""Shared fixtures: the model under test and its full-precision reference.

Nothing here touches CUDA at import time: the plugin pins xdist workers to their GPUs in
its own pytest_configure, which runs after conftest files are imported.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pytest_gpuinfer.tiny_models import trained_model_path, write_tiny_model

# A real project points this at its own checkpoint (a Hub id or a local directory).
MODEL = os.environ.get("DOWNSTREAM_MODEL", str(trained_model_path()))


@pytest.fixture(scope="session")
def model_path() -> str:
    return MODEL


@pytest.fixture
def reference(load_model: Any, model_path: str) -> Any:
    """fp32 with eager attention: the answers every other mode is compared with.

    ``load_model`` caches per session, so this loads once however many tests use it.
    """
    return load_model(model_path, "fp32", attn_implementation="eager")


@pytest.fixture(scope="session")
def encoder_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT-shaped encoder, written locally (no hub access)."""
    return write_tiny_model("bert", tmp_path_factory.mktemp("encoder") / "bert", task="encoder")

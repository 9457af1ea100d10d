"""Opt-in fixtures that compare every mode with one full-precision reference model.

Load them from the top-level ``conftest.py`` with ``pytest_plugins =
["pytest_gpuinfer.plugin.reference"]`` (or ``-p pytest_gpuinfer.plugin.reference``):

- ``model_path`` (session): the model under test: ``--gpuinfer-model`` / ini
  ``gpuinfer_model`` / ``GPUINFER_MODEL`` when set, else the tiny trained LM this package
  ships. Override it in your own conftest to point at your checkpoint.
- ``reference`` (function): ``model_path`` in fp32 with eager attention, through
  ``load_model`` (cached per session, so it loads once however many tests use it).

Importing this module imports no torch or transformers.
"""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def model_path(gpuinfer_settings: Any) -> str:
    """The model under test: the configured ``gpuinfer_model``, else the tiny trained LM."""
    configured = getattr(gpuinfer_settings, "model", None)
    if configured:
        return str(configured)
    from pytest_gpuinfer.tiny_models import trained_model_path

    return str(trained_model_path())


@pytest.fixture
def reference(load_model: Any, model_path: str) -> Any:
    """``model_path`` in fp32 with eager attention: what every other mode is compared with."""
    return load_model(model_path, "fp32", attn_implementation="eager")

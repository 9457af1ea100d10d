"""Handing memory back where torch is absent: a core install (no torch) that uses the
``load_model`` fixture must tear down cleanly (found on Python 3.12 without torch: the
session cache's teardown raised ModuleNotFoundError)."""

from __future__ import annotations

import sys

import pytest

from pytest_gpuinfer.loading import gpu_memory


def test_release_memory_without_torch_imports_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules is how Python spells "this import fails" (as without torch).
    monkeypatch.setitem(sys.modules, "torch", None)
    gpu_memory.release_memory()
    assert sys.modules["torch"] is None


def test_the_session_cache_clears_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_gpuinfer.loading.model_cache import ModelCache

    cache = ModelCache()
    monkeypatch.setitem(sys.modules, "torch", None)
    cache.clear()  # raised ModuleNotFoundError before
    assert cache.loads == 0 and sys.modules["torch"] is None

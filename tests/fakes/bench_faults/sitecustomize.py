"""Faults for ``gpuinfer bench``'s measuring processes, injected from outside the product.

The bench measures each mode in a spawned interpreter, out of the tests' reach; Python
imports ``sitecustomize`` at start-up from PYTHONPATH, so a test that puts this folder
there (and sets ``GPUINFER_BENCH_FAULTS``) gets these faults in every child. They sit
where the hardware would fail: the load (a broken install), and the model's forward
(CUDA out of memory, as ``torch.cuda.OutOfMemoryError``, from inside the forward where a
real allocation fails).

    GPUINFER_BENCH_FAULTS='{"oom_after_forwards": {"bf16": 12}, "load_error": {"int8": "..."}}'
"""

from __future__ import annotations

import json
import os
from typing import Any

ENV_VAR = "GPUINFER_BENCH_FAULTS"


def _install(faults: dict[str, Any]) -> None:
    from pytest_gpuinfer import loading

    real = loading.load_model

    def load_model(source: Any, mode: str, *args: Any, **kwargs: Any) -> Any:
        message = faults.get("load_error", {}).get(mode)
        if message:
            raise RuntimeError(str(message))
        loaded = real(source, mode, *args, **kwargs)
        after = faults.get("oom_after_forwards", {}).get(mode)
        if after is not None:
            _oom_after(loaded.model, int(after))
        return loaded

    loading.load_model = load_model  # type: ignore[assignment]


def _oom_after(model: Any, after: int) -> None:
    import torch

    calls = {"count": 0}

    def pre_hook(module: Any, args: Any) -> None:
        calls["count"] += 1
        if calls["count"] > after:
            raise torch.cuda.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB (simulated at the hardware "
                f"boundary by {ENV_VAR})"
            )

    model.register_forward_pre_hook(pre_hook)


_raw = os.environ.get(ENV_VAR)
if _raw:
    _data = json.loads(_raw)
    if isinstance(_data, dict):
        _install(_data)

"""Test-only faults at the hardware boundary, read from ``GPUINFER_BENCH_FAULTS``.

A CPU cannot run out of GPU memory on demand, so the tests ask for the error the
hardware would give: after N forward passes of the named mode, the model raises the
exception torch raises on a CUDA out-of-memory (``torch.cuda.OutOfMemoryError``), from
the same place a real allocation fails (inside the forward). ``load_error`` makes the
named mode's load fail as a broken install would. Unset (always, outside the tests),
nothing here does anything.

    GPUINFER_BENCH_FAULTS='{"oom_after_forwards": {"bf16": 12}, "load_error": {"int8": "..."}}'
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

ENV_VAR = "GPUINFER_BENCH_FAULTS"


def _faults() -> dict[str, Any]:
    raw = os.environ.get(ENV_VAR)
    if not raw:
        return {}
    data = json.loads(raw)
    return data if isinstance(data, dict) else {}


def load_error(mode: str) -> str | None:
    """The message a load of ``mode`` fails with, if the tests asked for one."""
    message = _faults().get("load_error", {}).get(mode)
    return str(message) if message else None


def install_oom(model: Any, mode: str) -> Callable[[], None]:
    """Make ``model`` raise a CUDA out-of-memory after the configured forward count;
    returns the function that removes the hook (a no-op when no fault is set)."""
    after = _faults().get("oom_after_forwards", {}).get(mode)
    if after is None:
        return lambda: None
    import torch

    calls = {"count": 0}

    def pre_hook(module: Any, args: Any) -> None:
        calls["count"] += 1
        if calls["count"] > int(after):
            raise torch.cuda.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB (simulated at the hardware "
                f"boundary by {ENV_VAR})"
            )

    handle = model.register_forward_pre_hook(pre_hook)
    return handle.remove  # type: ignore[no-any-return]

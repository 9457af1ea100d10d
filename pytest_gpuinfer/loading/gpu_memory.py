"""GPU memory around a load: ordinals it may use, free memory, release, spotting an OOM."""

from __future__ import annotations

import gc
import sys
from collections.abc import Mapping
from typing import Any

_AUTO_MAPS = ("auto", "balanced", "sequential", "balanced_low_0")


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _cuda_initialized() -> bool:
    import torch

    return bool(torch.cuda.is_initialized())  # type: ignore[no-untyped-call]


def targets_gpu(device_map: object) -> bool:
    """Whether a load with ``device_map`` puts weights on a GPU."""
    if not cuda_available():
        return False
    if device_map is None:
        return True
    if isinstance(device_map, str):
        return device_map != "cpu" and device_map != "disk"
    if isinstance(device_map, Mapping):
        return any(str(v) not in ("cpu", "disk") for v in device_map.values())
    return True


def resolve_default_placement(
    device_map: object, max_memory: dict[int | str, int] | None
) -> tuple[Any, dict[int | str, int] | None]:
    """``load_model``'s default placement (``device_map=None``) as transformers takes it.

    Without a GPU: "auto" (the CPU). With one or more: "auto" limited to the first
    visible GPU and the CPU, so a multi-GPU host places a model as a one-GPU host does.
    An explicit ``device_map`` passes through unchanged.
    """
    if device_map is not None:
        return device_map, max_memory
    import torch

    if not cuda_available() or torch.cuda.device_count() < 2 or max_memory is not None:
        return "auto", max_memory
    from accelerate.utils import get_max_memory

    every = get_max_memory()
    return "auto", {k: v for k, v in every.items() if k in (0, "cpu")}


def gpu_ordinals(device_map: object, max_memory: Mapping[int | str, int] | None) -> list[int]:
    """The CUDA ordinals a load may place weights on (for the free-memory checks)."""
    import torch

    if not torch.cuda.is_available():
        return []
    every = list(range(torch.cuda.device_count()))
    if device_map is None and max_memory is None:
        return every[:1]
    if device_map is None or (isinstance(device_map, str) and device_map in _AUTO_MAPS):
        if max_memory is not None:
            return [k for k in max_memory if isinstance(k, int) and k in every]
        return every
    values = list(device_map.values()) if isinstance(device_map, Mapping) else [device_map]
    ordinals: set[int] = set()
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool):
            ordinals.add(value)
        elif isinstance(value, str) and value.startswith("cuda"):
            _, _, suffix = value.partition(":")
            ordinals.add(int(suffix) if suffix.isdigit() else torch.cuda.current_device())
        elif value is not None and getattr(value, "type", None) == "cuda":
            index = getattr(value, "index", None)
            ordinals.add(index if isinstance(index, int) else torch.cuda.current_device())
    return sorted(o for o in ordinals if o in every)


def free_gpu_memory(ordinals: list[int]) -> dict[int, int]:
    """Free bytes per CUDA ordinal, as the driver reports them."""
    import torch

    return {ordinal: int(torch.cuda.mem_get_info(ordinal)[0]) for ordinal in ordinals}


def memory_in_use() -> int:
    """Bytes of CUDA memory torch has allocated in this process, over all GPUs (0 without)."""
    import torch

    if not torch.cuda.is_available() or not _cuda_initialized():
        return 0
    return sum(int(torch.cuda.memory_allocated(i)) for i in range(torch.cuda.device_count()))


def release_memory() -> None:
    """Collect garbage, drop cuBLAS's workspaces and hand torch's cached CUDA blocks back.

    The first matmul on a stream allocates a cuBLAS workspace through the caching
    allocator and keeps it for the process (32 MiB on Hopper: ``CUBLAS_WORKSPACE_CONFIG``'s
    default ``:4096:8``); it counts in ``memory_allocated()``, so "returned to the byte"
    needs it freed too. The next matmul allocates it again.
    """
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is None:
        return  # never imported (or not installed): it holds no GPU memory to hand back
    if torch.cuda.is_available() and _cuda_initialized():
        clear_workspaces = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
        if clear_workspaces is not None:  # private API: absent in CPU builds
            clear_workspaces()
        torch.cuda.empty_cache()


def is_oom(error: BaseException) -> bool:
    """Whether ``error`` is CUDA running out of memory (torch's types or bitsandbytes' text)."""
    import torch

    oom_types: tuple[type[BaseException], ...] = (torch.cuda.OutOfMemoryError,)
    generic = getattr(torch, "OutOfMemoryError", None)
    if isinstance(generic, type):
        oom_types += (generic,)
    if isinstance(error, oom_types):
        return True
    # bitsandbytes and older torch raise a plain RuntimeError with this text.
    return isinstance(error, RuntimeError) and "CUDA out of memory" in str(error)

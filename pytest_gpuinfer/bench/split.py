"""Where a token's time goes: the GPU's kernel time against the wall time of generate()."""

from __future__ import annotations

import time
from typing import Any

from pytest_gpuinfer.probes.memory_workload import Workload


def gpu_busy_split(
    model: Any, inputs: dict[str, Any], kwargs: dict[str, Any], device: str, workload: Workload
) -> dict[str, Any]:
    """Profile one generate() (torch.profiler, CUDA activity) and split its time per step
    into kernel time and the rest (host: Python, launches, synchronisation).

    The profiler slows the host, so only the kernel time is taken from this pass; the
    caller sets it against the un-profiled per-token latency.
    """
    if not device.startswith("cuda"):
        return {"available": False, "reason": "the split needs CUDA kernel timings (no GPU)"}
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        started = time.perf_counter()
        model.generate(**inputs, **kwargs)
        torch.cuda.synchronize()
        wall = time.perf_counter() - started
    kernel_us = 0.0
    kernels = 0
    for event in prof.events():
        device_type = getattr(event, "device_type", None)
        if device_type is not None and "CUDA" in str(device_type):
            kernel_us += float(event.time_range.elapsed_us())
            kernels += 1
    steps = workload.new_tokens
    return {
        "available": True,
        "gpu_kernel_seconds_per_step": kernel_us / 1e6 / steps,
        "kernels_per_step": kernels / steps,
        "profiled_wall_seconds_per_step": wall / steps,
        "note": "kernel time from one profiled generate(); host share = per-token latency - it",
    }

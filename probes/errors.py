"""The project's error types, under one base so a user can catch them all."""

from __future__ import annotations


class GpuinferError(Exception):
    """Base of every error pytest-gpuinfer raises on purpose."""


class InputError(GpuinferError, ValueError):
    """Bad input from a user: one line naming the bad value and what was expected.

    The CLI turns it into exit code 2, the plugin into ``pytest.UsageError``; neither
    shows a traceback.
    """


class RequirementUnmet(GpuinferError):
    """This machine does not meet a stated requirement (a mode, a memory figure ...)."""


class ModeUnavailable(RequirementUnmet):
    """The mode cannot run on this machine (or the report is a simulated profile)."""

    def __init__(self, mode: str, reason: str) -> None:
        super().__init__(f"mode {mode} is unavailable: {reason}")
        self.mode = mode
        self.reason = reason


class WorkloadDoesNotFit(RequirementUnmet):
    """The declared workload's predicted peak exceeds the free memory of the GPUs in use."""

    def __init__(self, message: str, *, needed_bytes: int, free_bytes: dict[int, int]) -> None:
        super().__init__(message)
        self.needed_bytes = needed_bytes
        self.free_bytes = free_bytes


class ModelLoadOOM(GpuinferError, RuntimeError):
    """CUDA ran out of memory while loading; what was allocated has been released."""

    def __init__(
        self,
        name_or_path: str,
        mode: str,
        *,
        needed_bytes: int | None,
        free_bytes: dict[int, int],
        detail: str,
    ) -> None:
        from pytest_gpuinfer.probes.memory_units import format_bytes, format_per_gpu

        self.needed_bytes = needed_bytes
        self.free_bytes = free_bytes
        needed = format_bytes(needed_bytes) if needed_bytes is not None else "an unknown amount"
        free = format_per_gpu(free_bytes)
        super().__init__(
            f"CUDA out of memory loading {name_or_path} in mode {mode}: needs about {needed}, "
            f"free at load time: {free}; the partial load was released ({detail})"
        )

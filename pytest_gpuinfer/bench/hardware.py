"""What the benchmark reads from NVML: bandwidth, energy, and which processes use the GPU.

Every reader returns a value or None with its reason, never raises: a benchmark on a
machine without NVML (a CPU, a container without the driver) still runs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

NVML_CLOCK_MEM = 2
"""pynvml.NVML_CLOCK_MEM (memory clock), spelled out for bindings that lack it."""

DOUBLE_DATA_RATE = 2
"""HBM and GDDR move data on both clock edges: NVML's max memory clock x 2 x bus bytes is
the datasheet bandwidth (H100 SXM: 2619 MHz x 2 x 5120 bit / 8 = 3.35 TB/s)."""


@dataclass(frozen=True)
class Reading:
    """A value read from the hardware, or None with why not."""

    value: float | None
    reason: str | None = None
    source: str | None = None


def _reason(error: BaseException) -> str:
    try:
        text = str(error)
    except Exception:  # NVMLError.__str__ may call into the library
        text = ""
    return f"NVML: {text or type(error).__name__}"


@contextlib.contextmanager
def nvml_session() -> Iterator[tuple[ModuleType | None, str | None]]:
    """``(pynvml, None)`` initialised for the block, or ``(None, reason)``."""
    try:
        import pynvml
    except Exception as error:
        yield None, f"cannot import pynvml: {error}"
        return
    try:
        pynvml.nvmlInit()
    except Exception as error:
        yield None, _reason(error)
        return
    try:
        yield pynvml, None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def device_handle(nvml: ModuleType, index: int) -> tuple[Any, str | None]:
    try:
        return nvml.nvmlDeviceGetHandleByIndex(index), None
    except Exception as error:
        return None, _reason(error)


def memory_bandwidth(
    nvml: ModuleType | None, handle: Any, profile_gb_per_s: float | None = None
) -> Reading:
    """Peak memory bandwidth in bytes/s: NVML's max memory clock x bus width, else a
    profile's datasheet figure, else None with the reason."""
    why = "no GPU" if nvml is None or handle is None else None
    if why is None and nvml is not None:
        try:
            clock_mhz = float(nvml.nvmlDeviceGetMaxClockInfo(handle, NVML_CLOCK_MEM))
            bus_bits = float(nvml.nvmlDeviceGetMemoryBusWidth(handle))
        except Exception as error:
            why = _reason(error)
        else:
            if clock_mhz > 0 and bus_bits > 0:
                value = clock_mhz * 1e6 * DOUBLE_DATA_RATE * bus_bits / 8
                source = f"NVML: {clock_mhz:.0f} MHz x {bus_bits:.0f}-bit bus x 2 (DDR)"
                return Reading(value, source=source)
            why = f"NVML reported memory clock {clock_mhz} MHz, bus width {bus_bits} bit"
    if profile_gb_per_s:
        return Reading(profile_gb_per_s * 1e9, source="the GPU profile's datasheet figure")
    return Reading(None, reason=f"peak memory bandwidth unknown ({why})")


def energy_millijoules(nvml: ModuleType | None, handle: Any) -> Reading:
    """NVML's cumulative energy counter (mJ since the driver loaded; Volta and later)."""
    if nvml is None or handle is None:
        return Reading(None, reason="no NVML energy counter without a GPU")
    try:
        return Reading(float(nvml.nvmlDeviceGetTotalEnergyConsumption(handle)))
    except Exception as error:
        return Reading(None, reason=f"no energy counter ({_reason(error)})")


def gpu_processes(nvml: ModuleType, handle: Any) -> dict[int, int | None]:
    """pid -> GPU memory in bytes (None where NVML cannot say) of compute and graphics
    processes on the device; empty when NVML cannot list them."""
    found: dict[int, int | None] = {}
    for name in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        function = getattr(nvml, name, None)
        if function is None:
            continue
        try:
            processes = function(handle)
        except Exception:
            continue
        for process in processes or []:
            used = getattr(process, "usedGpuMemory", None)
            found[int(process.pid)] = int(used) if isinstance(used, int) else None
    return found


def device_used_bytes(nvml: ModuleType, handle: Any) -> int | None:
    try:
        return int(nvml.nvmlDeviceGetMemoryInfo(handle).used)
    except Exception:
        return None


def process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8") as handle:
            return handle.read().strip() or "?"
    except OSError:
        return "not visible from here"


@dataclass
class ForeignProcess:
    pid: int
    name: str
    used_bytes: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "name": self.name, "used_bytes": self.used_bytes}


@dataclass
class GpuWatch:
    """The parent's view of the GPU while children measure: the child's process memory,
    the device's memory in use, and every process that is not ours."""

    nvml: ModuleType | None
    handle: Any
    own_pids: set[int] = field(default_factory=lambda: {os.getpid()})
    baseline: dict[int, int | None] = field(default_factory=dict)
    foreign: dict[int, ForeignProcess] = field(default_factory=dict)
    note: str | None = None
    last_listing: dict[int, int | None] = field(default_factory=dict)
    """pid -> GPU bytes as NVML listed them at the last sample."""

    def start(self) -> None:
        """Read the processes present before any child runs: none of them are ours."""
        if self.nvml is None or self.handle is None:
            return
        self.baseline = {
            pid: used
            for pid, used in gpu_processes(self.nvml, self.handle).items()
            if pid not in self.own_pids
        }
        for pid, used in self.baseline.items():
            self.foreign[pid] = ForeignProcess(pid, process_name(pid), used)

    def sample(self, child_pids: Iterable[int]) -> tuple[int | None, int | None]:
        """(this child's GPU memory, the device's used memory) now; records foreigners."""
        if self.nvml is None or self.handle is None:
            return None, None
        children = set(child_pids)
        listed = gpu_processes(self.nvml, self.handle)
        self.last_listing = listed
        ours = [used for pid, used in listed.items() if pid in children]
        others = {pid: u for pid, u in listed.items() if pid not in children | self.own_pids}
        if not ours and others and len(others) > len(self.baseline):
            # NVML reports host PIDs; inside a container they never match ours. Count a
            # process foreign only when it was there before we started, or beside ours.
            self.note = (
                "NVML lists no process with the child's PID (another PID namespace?): "
                "process memory is unknown; foreign processes are those present before "
                "the run or beside the child"
            )
            extra = set(others) - set(self.baseline)
            if len(extra) > 1:
                for pid in extra:
                    self.foreign.setdefault(
                        pid, ForeignProcess(pid, process_name(pid), listed[pid])
                    )
        else:
            for pid, used in others.items():
                self.foreign.setdefault(pid, ForeignProcess(pid, process_name(pid), used))
        process = sum(u for u in ours if u is not None) if ours else None
        return process, device_used_bytes(self.nvml, self.handle)

"""A fake ``pynvml`` (nvidia-ml-py) for tests: the NVML subset probes.nvml calls.

Put ``tests/fakes`` first on ``sys.path``/``PYTHONPATH`` and describe the machine in the
``GPUINFER_FAKE_NVML`` environment variable, as inline JSON or a path to a JSON file. The
spec is read at every ``nvmlInit``, so a test can change it between probes. Unset means a
machine without an NVIDIA driver: ``nvmlInit`` raises ``NVMLError_LibraryNotFound``.

Spec (every key optional)::

    {
      "driver": "580.65.06",            # nvmlSystemGetDriverVersion
      "cuda_driver": 13000,             # nvmlSystemGetCudaDriverVersion(_v2)
      "nvml_version": "13.580.65.06",   # nvmlSystemGetNVMLVersion
      "bytes": false,                   # strings come back as bytes (old bindings)
      "legacy_bindings": false,         # no nvmlMemory_v2, no version= keyword,
                                        #   no nvmlSystemGetCudaDriverVersion_v2
      "fail": {"init": "DriverNotLoaded", "count": ..., "driver": ..., "cuda_driver": ...,
               "cuda_driver_v2": ..., "nvml_version": ..., "shutdown": ...},
      "gpus": [{
        "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-...", "pci": "00000000:01:00.0",
        "cc": [9, 0], "total": 85899345920, "free": ..., "used": ..., "reserved": ...,
        "mig": false,                   # current MIG mode; "mig_pending" for the pending one
        "mig_devices": ["MIG-..."],     # MIG device UUIDs, when "mig" is true
        "fail": {"handle": ..., "name": ..., "uuid": ..., "pci": ..., "cc": ...,
                 "memory": ..., "memory_v2": ..., "mig": ..., "mig_count": ...,
                 "mig_handle": ..., "mig_uuid": ..., "*": ...}
      }]
    }

For ``gpuinfer bench`` a GPU may also carry ``"max_mem_clock_mhz"`` (default 2619),
``"bus_width"`` (bits, default 5120), ``"energy_mj"`` (the energy counter's start,
default 1e6; each read adds ``"energy_step_mj"``, default 5000) and ``"processes"``
(``[{"pid": 123, "used": bytes}]``, the compute processes on it; default none); their
failure keys are "clock", "bus_width", "energy" and "processes".

Health (``probes.nvml_health``), per GPU: ``"clocks_event_reasons"`` (the bit mask, default
0), ``"ecc_uncorrected"`` (volatile count, default 0), ``"remapped_rows"`` ([corrected,
uncorrected, pending, failure], default [0, 0, 0, 0]), ``"pcie"`` ({"gen", "max_gen",
"width", "max_width"}, default gen 5 x16 of gen 5 x16), ``"persistence"`` (default 1); their
failure keys are "clocks_event", "ecc", "remapped", "pcie" and "persistence". With
``legacy_bindings`` only the old name ``nvmlDeviceGetCurrentClocksThrottleReasons`` exists.

A failure is the suffix of an NVMLError class ("NotSupported", "GpuIsLost",
"FunctionNotFound", ...) or the name of a builtin exception ("TypeError",
"RuntimeError") to exercise a caller's last-resort net. A GPU's "*" applies to every
call on that GPU after its handle. ``calls`` records the API calls made, in order.
"""

from __future__ import annotations

import builtins
import json
import os
from dataclasses import dataclass
from typing import Any

ENV_VAR = "GPUINFER_FAKE_NVML"

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_ALREADY_INITIALIZED = 5
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_INSUFFICIENT_POWER = 8
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_IRQ_ISSUE = 11
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_CORRUPTED_INFOROM = 14
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_OPERATING_SYSTEM = 17
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_IN_USE = 19
NVML_ERROR_MEMORY = 20
NVML_ERROR_NO_DATA = 21
NVML_ERROR_VGPU_ECC_NOT_SUPPORTED = 22
NVML_ERROR_INSUFFICIENT_RESOURCES = 23
NVML_ERROR_FREQ_NOT_SUPPORTED = 24
NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25
NVML_ERROR_DEPRECATED = 26
NVML_ERROR_NOT_READY = 27
NVML_ERROR_GPU_NOT_FOUND = 28
NVML_ERROR_INVALID_STATE = 29
NVML_ERROR_RESET_TYPE_NOT_SUPPORTED = 30
NVML_ERROR_UNKNOWN = 999

NVML_DEVICE_MIG_DISABLE = 0
NVML_DEVICE_MIG_ENABLE = 1

_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_NOT_FOUND: "Not Found",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_LIB_RM_VERSION_MISMATCH: "RM has detected an NVML/RM version mismatch.",
    NVML_ERROR_UNKNOWN: "Unknown Error",
}


class NVMLError(Exception):
    """Like the real one: ``NVMLError(code)`` builds the subclass for that code."""

    _valClassMapping: dict[int, type[NVMLError]] = {}  # noqa: RUF012 - the real name
    value: int

    def __new__(cls, value: int) -> NVMLError:
        if cls is NVMLError:
            cls = NVMLError._valClassMapping.get(value, cls)
        error = Exception.__new__(cls)
        error.value = value
        return error

    def __str__(self) -> str:
        return _MESSAGES.get(self.value, f"NVML Error with code {self.value}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NVMLError) and self.value == other.value

    def __hash__(self) -> int:
        return hash(self.value)


def _class_name(constant: str) -> str:
    # NVML_ERROR_GPU_IS_LOST -> NVMLError_GpuIsLost, the real module's naming
    words = constant.removeprefix("NVML_ERROR_").split("_")
    return "NVMLError_" + "".join(word.capitalize() for word in words)


def _make_error_class(name: str, code: int) -> type[NVMLError]:
    def __new__(cls: type[NVMLError], *args: object) -> NVMLError:
        return NVMLError.__new__(cls, code)

    return type(name, (NVMLError,), {"__new__": __new__, "__module__": __name__})


for _constant, _code in list(globals().items()):
    if _constant.startswith("NVML_ERROR_"):
        _cls = _make_error_class(_class_name(_constant), _code)
        globals()[_cls.__name__] = _cls
        NVMLError._valClassMapping[_code] = _cls

# Spelled out for readers and type checkers; the loop above made them.
NVMLError_NotSupported: Any = globals()["NVMLError_NotSupported"]
NVMLError_LibraryNotFound: Any = globals()["NVMLError_LibraryNotFound"]
NVMLError_DriverNotLoaded: Any = globals()["NVMLError_DriverNotLoaded"]
NVMLError_GpuIsLost: Any = globals()["NVMLError_GpuIsLost"]
NVMLError_FunctionNotFound: Any = globals()["NVMLError_FunctionNotFound"]
NVMLError_Uninitialized: Any = globals()["NVMLError_Uninitialized"]
NVMLError_InvalidArgument: Any = globals()["NVMLError_InvalidArgument"]
NVMLError_NotFound: Any = globals()["NVMLError_NotFound"]

calls: list[str] = []
"""Every API call made, by function name, in order (tests read it)."""

_state: dict[str, Any] = {"spec": None, "initialised": 0}


@dataclass
class _Handle:
    gpu: int
    mig: int | None = None


class c_nvmlMemory_t:
    def __init__(self, total: int, free: int, used: int) -> None:
        self.total, self.free, self.used = total, free, used


class c_nvmlMemory_v2_t:
    def __init__(self, version: int, total: int, reserved: int, free: int, used: int) -> None:
        self.version, self.total, self.reserved = version, total, reserved
        self.free, self.used = free, used


class nvmlPciInfo_t:
    def __init__(self, bus_id: str | bytes) -> None:
        self.busId = bus_id
        self.busIdLegacy = bus_id


_NVML_MEMORY_V2 = 0x02000028


def __getattr__(name: str) -> Any:
    # Module attributes that old bindings lack, present or not as the spec says.
    if not _spec().get("legacy_bindings"):
        if name == "nvmlMemory_v2":
            return _NVML_MEMORY_V2
        if name == "nvmlSystemGetCudaDriverVersion_v2":
            return _cuda_driver_version_v2
        if name == "nvmlDeviceGetCurrentClocksEventReasons":
            return _clocks_event_reasons
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _load_spec() -> dict[str, Any] | None:
    raw = os.environ.get(ENV_VAR)
    if raw is None:
        return None
    text = raw if raw.lstrip().startswith("{") else _read(raw)
    spec = json.loads(text)
    if not isinstance(spec, dict):
        raise ValueError(f"{ENV_VAR} must hold a JSON object, got {type(spec).__name__}")
    return spec


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _spec() -> dict[str, Any]:
    return _state["spec"] or {}


def _raise(failure: str) -> None:
    error_class: Any = globals().get(f"NVMLError_{failure}")
    if error_class in NVMLError._valClassMapping.values():
        raise error_class()
    builtin = getattr(builtins, failure, None)
    if isinstance(builtin, type) and issubclass(builtin, Exception):
        raise builtin(f"fake NVML failure ({failure})")
    raise ValueError(f"fake NVML spec: unknown failure {failure!r}")


def _fail(what: str) -> None:
    failure = _spec().get("fail", {}).get(what)
    if failure:
        _raise(failure)


def _call(name: str) -> None:
    calls.append(name)
    if not _state["initialised"]:
        raise NVMLError_Uninitialized()


def _gpu(handle: _Handle, what: str) -> dict[str, Any]:
    gpu: dict[str, Any] = _spec()["gpus"][handle.gpu]
    failures = gpu.get("fail", {})
    failure = failures.get(what) or failures.get("*")
    if failure:
        _raise(failure)
    return gpu


def _text(value: str) -> str | bytes:
    return value.encode() if _spec().get("bytes") else value


def nvmlInit() -> None:
    calls.append("nvmlInit")
    spec = _load_spec()
    if spec is None:
        raise NVMLError_LibraryNotFound()
    _state["spec"] = spec
    _fail("init")
    _state["initialised"] += 1


def nvmlShutdown() -> None:
    _call("nvmlShutdown")
    _state["initialised"] -= 1
    _fail("shutdown")


def nvmlSystemGetDriverVersion() -> str | bytes:
    _call("nvmlSystemGetDriverVersion")
    _fail("driver")
    return _text(_spec().get("driver", "580.65.06"))


def nvmlSystemGetCudaDriverVersion() -> int:
    _call("nvmlSystemGetCudaDriverVersion")
    _fail("cuda_driver")
    return int(_spec().get("cuda_driver", 13000))


def _cuda_driver_version_v2() -> int:
    _call("nvmlSystemGetCudaDriverVersion_v2")
    _fail("cuda_driver_v2")
    return int(_spec().get("cuda_driver", 13000))


def nvmlSystemGetNVMLVersion() -> str | bytes:
    _call("nvmlSystemGetNVMLVersion")
    _fail("nvml_version")
    return _text(_spec().get("nvml_version", "13.580.65.06"))


def nvmlDeviceGetCount() -> int:
    _call("nvmlDeviceGetCount")
    _fail("count")
    return len(_spec().get("gpus", []))


def nvmlDeviceGetHandleByIndex(index: int) -> _Handle:
    _call("nvmlDeviceGetHandleByIndex")
    gpus = _spec().get("gpus", [])
    if not 0 <= index < len(gpus):
        raise NVMLError_InvalidArgument()
    failure = gpus[index].get("fail", {}).get("handle")
    if failure:
        _raise(failure)
    return _Handle(index)


def nvmlDeviceGetName(handle: _Handle) -> str | bytes:
    _call("nvmlDeviceGetName")
    return _text(_gpu(handle, "name").get("name", "NVIDIA H100 80GB HBM3"))


def nvmlDeviceGetUUID(handle: _Handle) -> str | bytes:
    _call("nvmlDeviceGetUUID")
    if handle.mig is not None:
        gpu = _gpu(handle, "mig_uuid")
        return _text(gpu["mig_devices"][handle.mig])
    gpu = _gpu(handle, "uuid")
    return _text(gpu.get("uuid", f"GPU-{handle.gpu:08x}-0000-0000-0000-000000000000"))


def nvmlDeviceGetPciInfo(handle: _Handle) -> nvmlPciInfo_t:
    _call("nvmlDeviceGetPciInfo")
    gpu = _gpu(handle, "pci")
    return nvmlPciInfo_t(_text(gpu.get("pci", f"00000000:{handle.gpu + 1:02X}:00.0")))


def nvmlDeviceGetCudaComputeCapability(handle: _Handle) -> tuple[int, int]:
    _call("nvmlDeviceGetCudaComputeCapability")
    major, minor = _gpu(handle, "cc").get("cc", [9, 0])
    return int(major), int(minor)


def nvmlDeviceGetMemoryInfo(
    handle: _Handle, version: int | None = None
) -> c_nvmlMemory_t | c_nvmlMemory_v2_t:
    if version is not None and _spec().get("legacy_bindings"):
        # Old bindings had no version parameter at all.
        raise TypeError("nvmlDeviceGetMemoryInfo() got an unexpected keyword argument 'version'")
    _call("nvmlDeviceGetMemoryInfo")
    gpu = _gpu(handle, "memory_v2" if version else "memory")
    total = int(gpu.get("total", 80 * 2**30))
    reserved = int(gpu.get("reserved", 0))
    free = int(gpu.get("free", total - reserved))
    used = int(gpu.get("used", total - reserved - free))
    if version:
        return c_nvmlMemory_v2_t(version, total, reserved, free, used)
    # Since R510, v1's used counts the driver-reserved memory too.
    return c_nvmlMemory_t(total, free, total - free)


def nvmlDeviceGetMigMode(handle: _Handle) -> list[int]:
    _call("nvmlDeviceGetMigMode")
    gpu = _gpu(handle, "mig")
    current = bool(gpu.get("mig", False))
    pending = bool(gpu.get("mig_pending", current))
    return [int(current), int(pending)]


def nvmlDeviceGetMaxMigDeviceCount(handle: _Handle) -> int:
    _call("nvmlDeviceGetMaxMigDeviceCount")
    gpu = _gpu(handle, "mig_count")
    return int(gpu.get("max_mig", 7 if gpu.get("mig") else 0))


def nvmlDeviceGetMigDeviceHandleByIndex(handle: _Handle, index: int) -> _Handle:
    _call("nvmlDeviceGetMigDeviceHandleByIndex")
    gpu = _gpu(handle, "mig_handle")
    if not 0 <= index < len(gpu.get("mig_devices", [])):
        raise NVMLError_NotFound()
    return _Handle(handle.gpu, index)


# -- what gpuinfer bench reads ---------------------------------------------------------------

NVML_CLOCK_MEM = 2


class c_nvmlProcessInfo_t:
    def __init__(self, pid: int, used: int | None) -> None:
        self.pid, self.usedGpuMemory = pid, used


def nvmlDeviceGetMaxClockInfo(handle: _Handle, clock_type: int) -> int:
    _call("nvmlDeviceGetMaxClockInfo")
    gpu = _gpu(handle, "clock")
    if clock_type != NVML_CLOCK_MEM:
        raise NVMLError_NotSupported()
    return int(gpu.get("max_mem_clock_mhz", 2619))


def nvmlDeviceGetMemoryBusWidth(handle: _Handle) -> int:
    _call("nvmlDeviceGetMemoryBusWidth")
    return int(_gpu(handle, "bus_width").get("bus_width", 5120))


def nvmlDeviceGetTotalEnergyConsumption(handle: _Handle) -> int:
    _call("nvmlDeviceGetTotalEnergyConsumption")
    gpu = _gpu(handle, "energy")
    key = f"energy-{handle.gpu}"
    value = _state.get(key, float(gpu.get("energy_mj", 1_000_000)))
    _state[key] = value + float(gpu.get("energy_step_mj", 5000))
    return int(value)


def nvmlDeviceGetComputeRunningProcesses(handle: _Handle) -> list[c_nvmlProcessInfo_t]:
    _call("nvmlDeviceGetComputeRunningProcesses")
    gpu = _gpu(handle, "processes")
    return [c_nvmlProcessInfo_t(int(p["pid"]), p.get("used")) for p in gpu.get("processes", [])]


def nvmlDeviceGetGraphicsRunningProcesses(handle: _Handle) -> list[c_nvmlProcessInfo_t]:
    _call("nvmlDeviceGetGraphicsRunningProcesses")
    _gpu(handle, "processes")
    return []


# -- health (probes.nvml_health) ------------------------------------------------------------


def _clocks_event_reasons(handle: _Handle) -> int:
    _call("nvmlDeviceGetCurrentClocksEventReasons")
    return int(_gpu(handle, "clocks_event").get("clocks_event_reasons", 0))


def nvmlDeviceGetCurrentClocksThrottleReasons(handle: _Handle) -> int:
    _call("nvmlDeviceGetCurrentClocksThrottleReasons")
    return int(_gpu(handle, "clocks_event").get("clocks_event_reasons", 0))


def nvmlDeviceGetTotalEccErrors(handle: _Handle, error_type: int, counter_type: int) -> int:
    _call("nvmlDeviceGetTotalEccErrors")
    gpu = _gpu(handle, "ecc")
    if (error_type, counter_type) != (1, 0):  # uncorrected, volatile: what the probe asks
        return 0
    return int(gpu.get("ecc_uncorrected", 0))


def nvmlDeviceGetRemappedRows(handle: _Handle) -> tuple[int, int, int, int]:
    _call("nvmlDeviceGetRemappedRows")
    corrected, uncorrected, pending, failure = _gpu(handle, "remapped").get(
        "remapped_rows", [0, 0, 0, 0]
    )
    return int(corrected), int(uncorrected), int(pending), int(failure)


def _pcie(handle: _Handle, key: str, default: int) -> int:
    return int(_gpu(handle, "pcie").get("pcie", {}).get(key, default))


def nvmlDeviceGetCurrPcieLinkGeneration(handle: _Handle) -> int:
    _call("nvmlDeviceGetCurrPcieLinkGeneration")
    return _pcie(handle, "gen", 5)


def nvmlDeviceGetMaxPcieLinkGeneration(handle: _Handle) -> int:
    _call("nvmlDeviceGetMaxPcieLinkGeneration")
    return _pcie(handle, "max_gen", 5)


def nvmlDeviceGetCurrPcieLinkWidth(handle: _Handle) -> int:
    _call("nvmlDeviceGetCurrPcieLinkWidth")
    return _pcie(handle, "width", 16)


def nvmlDeviceGetMaxPcieLinkWidth(handle: _Handle) -> int:
    _call("nvmlDeviceGetMaxPcieLinkWidth")
    return _pcie(handle, "max_width", 16)


def nvmlDeviceGetPersistenceMode(handle: _Handle) -> int:
    _call("nvmlDeviceGetPersistenceMode")
    return int(_gpu(handle, "persistence").get("persistence", 1))

"""The NVML probe: the NVIDIA GPUs a CUDA process would see, read without touching CUDA.

Initialising CUDA in the pytest controller breaks forked test isolation, so GPUs are
read through NVML (nvidia-ml-py, module ``pynvml``), imported only when a probe runs.
The probe never raises: what it cannot read is None with its reason in ``unknown``. An
unexpected exception from the bindings (a TypeError or RuntimeError from a binding that
does not match the driver) makes that one field, or that one GPU, unknown; the rest stays.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any, TypeVar

from pytest_gpuinfer.probes.architectures import architecture_name, has_tensor_cores
from pytest_gpuinfer.probes.report import DriverInfo, GPUInfo
from pytest_gpuinfer.probes.visible_devices import DeviceDescriptor, resolve_visible_devices

_T = TypeVar("_T")

_INIT_REASONS = {
    "LibraryNotFound": "NVML library not found (no NVIDIA driver installed?)",
    "DriverNotLoaded": "NVIDIA driver not loaded (is the nvidia kernel module loaded?)",
    "NoPermission": "no permission to use the NVIDIA devices (NVML: Insufficient Permissions)",
    "LibRmVersionMismatch": (
        "the NVML library and the loaded NVIDIA kernel driver differ in version "
        "(reboot, or reload the driver, after a driver upgrade)"
    ),
}

# Every GPUInfo field the probe reads: all of them unknown when the device is unreachable.
_DEVICE_FIELDS = (
    "name",
    "uuid",
    "pci_bus_id",
    "compute_capability",
    "architecture",
    "has_tensor_cores",
    "total_memory_bytes",
    "free_memory_bytes",
    "used_memory_bytes",
    "mig_mode",
)
_MEMORY_FIELDS = ("total_memory_bytes", "free_memory_bytes", "used_memory_bytes")
_NO_DEDICATED_MEMORY = "a GPU without dedicated memory, e.g. unified memory"


@dataclass
class NvmlProbe:
    """What NVML says about this machine's GPUs, as a CUDA process here would see them."""

    gpus: list[GPUInfo]
    """Visible GPUs in CUDA ordinal order; ``index`` is the NVML index."""
    driver: DriverInfo
    unavailable_reason: str | None = None
    """Why ``gpus`` is empty (no NVML, driver not loaded, all hidden...), else None."""
    all_device_count: int | None = None
    """Every GPU NVML counts, visible or not; None when NVML could not count them."""
    warnings: list[str] = field(default_factory=list)


def probe_nvml(environ: Mapping[str, str] | None = None) -> NvmlProbe:
    """Read the GPUs and driver through NVML; never raises.

    ``environ`` supplies ``CUDA_VISIBLE_DEVICES`` and ``CUDA_DEVICE_ORDER``
    (default: ``os.environ``).
    """
    env = os.environ if environ is None else environ
    try:
        import pynvml
    except ImportError as exc:
        return _unavailable(f"nvidia-ml-py is not installed (cannot import pynvml: {exc})")
    except Exception as exc:  # a broken install must not crash a pytest session
        return _unavailable(f"importing pynvml failed: {type(exc).__name__}: {exc}")
    try:
        return _Session(pynvml).probe(env.get("CUDA_VISIBLE_DEVICES"), env.get("CUDA_DEVICE_ORDER"))
    except Exception as exc:  # last resort: a probe must never crash a pytest session
        return _unavailable(f"NVML probe failed unexpectedly: {type(exc).__name__}: {exc}")


def format_cuda_version(version: int) -> str:
    """NVML's integer CUDA version (13000, 12040) as "13.0", "12.4"."""
    return f"{version // 1000}.{version % 1000 // 10}"


def _unavailable(reason: str) -> NvmlProbe:
    return NvmlProbe(gpus=[], driver=DriverInfo(), unavailable_reason=reason)


def _unexpected(exc: BaseException) -> str:
    try:
        message = str(exc)
    except Exception:
        message = ""
    detail = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return f"the NVML binding failed unexpectedly ({detail})"


def _text(value: object) -> str:
    # nvidia-ml-py returns str; bindings before 11.515 returned bytes.
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


class _NeverRaised(Exception):
    """Stands in for NVMLError when the bindings lack it, so ``except`` stays valid."""


class _Session:
    def __init__(self, nvml: ModuleType) -> None:
        self.nvml = nvml
        error = getattr(nvml, "NVMLError", None)
        self.error: type[BaseException] = (
            error if isinstance(error, type) and issubclass(error, BaseException) else _NeverRaised
        )
        self.warnings: list[str] = []

    def is_error(self, exc: BaseException, suffix: str) -> bool:
        error_class = getattr(self.nvml, f"NVMLError_{suffix}", None)
        return isinstance(error_class, type) and isinstance(exc, error_class)

    def reason(self, exc: BaseException) -> str:
        try:
            message = str(exc)
        except Exception:  # NVMLError.__str__ may call into the library
            message = type(exc).__name__
        return f"NVML: {message or type(exc).__name__}"

    def probe(self, visible: str | None, order: str | None) -> NvmlProbe:
        nvml = self.nvml
        try:
            nvml.nvmlInit()
        except self.error as exc:
            for suffix, reason in _INIT_REASONS.items():
                if self.is_error(exc, suffix):
                    return _unavailable(reason)
            return _unavailable(f"NVML initialisation failed ({self.reason(exc)})")
        try:
            driver = self.driver()
            try:
                count = int(nvml.nvmlDeviceGetCount())
            except Exception as exc:
                reason = self.reason(exc) if isinstance(exc, self.error) else _unexpected(exc)
                return NvmlProbe(
                    gpus=[],
                    driver=driver,
                    unavailable_reason=f"NVML could not count the GPUs ({reason})",
                    warnings=self.warnings,
                )
            devices = [self.device(index) for index in range(count)]
        finally:
            # The readings are complete; a failed shutdown changes none of them.
            with contextlib.suppress(Exception):
                nvml.nvmlShutdown()
        return self.select(devices, count, driver, visible, order)

    def select(
        self,
        devices: list[tuple[GPUInfo, tuple[str, ...]]],
        count: int,
        driver: DriverInfo,
        visible: str | None,
        order: str | None,
    ) -> NvmlProbe:
        descriptors = [
            DeviceDescriptor(info.index, info.uuid, info.pci_bus_id, info.compute_capability, migs)
            for info, migs in devices
        ]
        selection = resolve_visible_devices(descriptors, visible, order)
        warnings = self.warnings + selection.warnings
        by_index = {info.index: info for info, _ in devices}
        gpus: list[GPUInfo] = []
        for ordinal, (index, mig) in enumerate(
            zip(selection.nvml_indices, selection.mig_uuids, strict=True)
        ):
            info = by_index[index]
            gpus.append(
                replace(
                    info, cuda_ordinal=ordinal, unknown=dict(info.unknown), health=dict(info.health)
                )
            )
            if mig is not None:
                warnings.append(
                    f"CUDA device {ordinal} is MIG device {mig} of GPU {index}; "
                    "its memory figures are the whole GPU's"
                )
            elif info.mig_mode:
                warnings.append(
                    f"GPU {index} is in MIG mode: CUDA sees its MIG devices, not the whole "
                    "GPU, and its memory figures are the whole GPU's"
                )
        reason = None
        if count == 0:
            reason = "NVML found no NVIDIA GPU"
        elif not gpus:
            reason = f"CUDA_VISIBLE_DEVICES={visible!r} hides all {count} NVIDIA GPU(s)"
        return NvmlProbe(gpus, driver, reason, count, warnings)

    def driver(self) -> DriverInfo:
        nvml = self.nvml
        info = DriverInfo()
        fields = _Fields(self, info.unknown)
        info.driver_version = fields.read(
            "driver_version", lambda: _text(nvml.nvmlSystemGetDriverVersion())
        )
        cuda = fields.read("cuda_driver_version", self.cuda_driver_version)
        info.cuda_driver_version = None if cuda is None else format_cuda_version(cuda)
        info.nvml_version = fields.read(
            "nvml_version", lambda: _text(nvml.nvmlSystemGetNVMLVersion())
        )
        return info

    def cuda_driver_version(self) -> int:
        nvml = self.nvml
        newer = getattr(nvml, "nvmlSystemGetCudaDriverVersion_v2", None)
        if newer is not None:
            try:
                return int(newer())
            except self.error as exc:
                if not self.is_error(exc, "FunctionNotFound"):
                    raise
        return int(nvml.nvmlSystemGetCudaDriverVersion())

    def device(self, index: int) -> tuple[GPUInfo, tuple[str, ...]]:
        """One GPU's readings and, in MIG mode, its MIG device UUIDs.

        Whatever goes wrong with one GPU stays with that GPU: it is listed with every
        field unknown, and the other GPUs are read as usual.
        """
        try:
            return self.read_device(index)
        except Exception as exc:
            reason = self.reason(exc) if isinstance(exc, self.error) else _unexpected(exc)
            info = GPUInfo(index=index)
            info.unknown.update(dict.fromkeys(_DEVICE_FIELDS, reason))
            self.warnings.append(f"GPU {index} could not be read ({reason})")
            return info, ()

    def read_device(self, index: int) -> tuple[GPUInfo, tuple[str, ...]]:
        nvml = self.nvml
        info = GPUInfo(index=index)
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
        except Exception as exc:
            reason = self.reason(exc) if isinstance(exc, self.error) else _unexpected(exc)
            info.unknown.update(dict.fromkeys(_DEVICE_FIELDS, reason))
            self.warnings.append(f"GPU {index} could not be opened ({reason})")
            return info, ()

        fields = _Fields(self, info.unknown)
        info.name = fields.read("name", lambda: _text(nvml.nvmlDeviceGetName(handle)))
        info.uuid = fields.read("uuid", lambda: _text(nvml.nvmlDeviceGetUUID(handle)))
        info.pci_bus_id = fields.read(
            "pci_bus_id", lambda: _text(nvml.nvmlDeviceGetPciInfo(handle).busId)
        )
        info.compute_capability = fields.read(
            "compute_capability",
            lambda: _capability(nvml.nvmlDeviceGetCudaComputeCapability(handle)),
        )
        self.architecture(info)
        self.memory(info, fields, handle)
        mig_uuids: tuple[str, ...] = ()
        mode = fields.read(
            "mig_mode",
            lambda: _mig_modes(nvml.nvmlDeviceGetMigMode(handle)),
            "not supported by this GPU",
        )
        if mode is not None:
            current, pending = mode
            info.mig_mode = current == getattr(nvml, "NVML_DEVICE_MIG_ENABLE", 1)
            if pending != current:
                self.warnings.append(
                    f"GPU {index} has a MIG mode change pending (applies after a GPU reset)"
                )
            if info.mig_mode:
                mig_uuids = self.mig_uuids(index, handle)
        from pytest_gpuinfer.probes.nvml_health import read_health

        info.health = read_health(self, handle, fields.lost)
        if fields.lost is not None:
            self.warnings.append(f"GPU {index} is lost ({fields.lost}); listed with what was read")
        return info, mig_uuids

    def architecture(self, info: GPUInfo) -> None:
        capability = info.compute_capability
        if capability is None:
            info.unknown["architecture"] = "compute capability unknown"
            info.unknown["has_tensor_cores"] = "compute capability unknown"
            return
        info.architecture = architecture_name(capability)
        if info.name is None and (7, 3) <= capability <= (7, 9):
            # Turing boards sold without tensor cores are told apart only by name.
            info.unknown["has_tensor_cores"] = "GPU name unknown (GTX 16xx Turing boards lack them)"
            return
        info.has_tensor_cores = has_tensor_cores(capability, info.name)

    def memory(self, info: GPUInfo, fields: _Fields, handle: object) -> None:
        memory, reason = self.memory_info(fields, handle)
        figures: tuple[int, int, int] | None = None
        if memory is not None:
            try:
                figures = int(memory.total), int(memory.free), int(memory.used)
            except Exception as exc:  # a binding whose struct lacks a field
                reason = _unexpected(exc)
        if figures is not None and figures[0] == 0:
            figures, reason = None, f"NVML reports 0 bytes of memory ({_NO_DEDICATED_MEMORY})"
        if figures is None:
            info.unknown.update(dict.fromkeys(_MEMORY_FIELDS, reason or "unknown"))
            return
        info.total_memory_bytes, info.free_memory_bytes, info.used_memory_bytes = figures

    def memory_info(self, fields: _Fields, handle: object) -> tuple[Any, str | None]:
        """v2 (``used`` without driver-reserved memory), else v1; (info, None) or (None, why)."""
        nvml = self.nvml
        if fields.lost is not None:
            return None, fields.lost
        version = getattr(nvml, "nvmlMemory_v2", None)
        if version is not None:
            try:
                return nvml.nvmlDeviceGetMemoryInfo(handle, version=version), None
            except TypeError:
                pass  # bindings older than the version keyword
            except self.error as exc:
                # Drivers before R510 answer FunctionNotFound or NotSupported: try v1.
                if self.is_error(exc, "GpuIsLost"):
                    fields.lost = self.reason(exc)
                    return None, fields.lost
            except Exception:
                pass  # a binding bug in v2 only: v1 may still answer
        try:
            return nvml.nvmlDeviceGetMemoryInfo(handle), None
        except self.error as exc:
            reason = self.reason(exc)
            if self.is_error(exc, "GpuIsLost"):
                fields.lost = reason
            elif self.is_error(exc, "NotSupported"):
                reason = f"{reason} ({_NO_DEDICATED_MEMORY})"
            return None, reason
        except Exception as exc:
            return None, _unexpected(exc)

    def mig_uuids(self, index: int, handle: object) -> tuple[str, ...]:
        nvml = self.nvml
        uuids: list[str] = []
        try:
            for slot in range(int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))):
                try:
                    mig_handle = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
                except self.error as exc:
                    if self.is_error(exc, "NotFound"):
                        continue  # an empty slot
                    raise
                uuids.append(_text(nvml.nvmlDeviceGetUUID(mig_handle)))
        except Exception as exc:
            reason = self.reason(exc) if isinstance(exc, self.error) else _unexpected(exc)
            self.warnings.append(
                f"GPU {index}: could not list its MIG devices ({reason}); "
                "MIG- entries in CUDA_VISIBLE_DEVICES cannot be matched to it"
            )
        return tuple(uuids)


class _Fields:
    """Reads fields into an ``unknown`` map; after a lost GPU, stops calling NVML."""

    def __init__(self, session: _Session, unknown: dict[str, str]) -> None:
        self.session = session
        self.unknown = unknown
        self.lost: str | None = None

    def read(
        self, name: str, reader: Callable[[], _T], not_supported: str | None = None
    ) -> _T | None:
        if self.lost is not None:
            self.unknown[name] = self.lost
            return None
        try:
            return reader()
        except self.session.error as exc:
            reason = self.session.reason(exc)
            if self.session.is_error(exc, "GpuIsLost"):
                self.lost = reason
            elif not_supported is not None and self.session.is_error(exc, "NotSupported"):
                reason = not_supported
            self.unknown[name] = reason
            return None
        except Exception as exc:  # that field is unknown; every other one is still read
            self.unknown[name] = _unexpected(exc)
            return None


def _mig_modes(value: Any) -> tuple[int, int]:
    current, pending = value
    return int(current), int(pending)


def _capability(value: Any) -> tuple[int, int]:
    major, minor = value
    return int(major), int(minor)

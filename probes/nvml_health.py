"""Node health that makes a GPU slow or unreliable, read through NVML, and what it means.

Read per GPU by :mod:`probes.nvml` (never CUDA): the clock event (throttle) reasons, volatile
uncorrectable ECC errors, remapped rows, the PCIe link against its maximum, persistence
mode. Every call is guarded: one that fails leaves that fact ``None`` with
"unknown, because ..." in ``health["unknown"]``; the rest is still read.
:func:`assess` turns the facts into notes and the reasons a GPU is "degraded" (pure, so
it works on a report read back from JSON).

Bit values and call names are NVML's (``nvml.h``: ``nvmlClocksEventReason*``, formerly
``nvmlClocksThrottleReason*``; ``nvmlDeviceGetTotalEccErrors``,
``nvmlDeviceGetRemappedRows``, ``nvmlDeviceGet{Curr,Max}PcieLink{Generation,Width}``,
``nvmlDeviceGetPersistenceMode``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pytest_gpuinfer.probes.report import Report

CLOCK_EVENT_REASONS: tuple[tuple[int, str, bool], ...] = (
    # (bit, name, slows a working GPU down for a reason a person should fix)
    (0x001, "gpu_idle", False),
    (0x002, "applications_clocks_setting", False),
    (0x004, "sw_power_cap", False),
    (0x008, "hw_slowdown", True),
    (0x010, "sync_boost", False),
    (0x020, "sw_thermal_slowdown", True),
    (0x040, "hw_thermal_slowdown", True),
    (0x080, "hw_power_brake_slowdown", True),
    (0x100, "display_clock_setting", False),
)
"""``nvmlClocksEventReason*``: a power cap or idle clocks are normal; the hardware slowdowns
(thermal, power brake, HW slowdown) mean the node needs attention."""

_DEGRADING = {name for _, name, bad in CLOCK_EVENT_REASONS if bad}

NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
NVML_FEATURE_ENABLED = 1


class _Session(Protocol):
    nvml: Any
    error: type[BaseException]

    def reason(self, exc: BaseException) -> str: ...

    def is_error(self, exc: BaseException, suffix: str) -> bool: ...


def read_health(session: _Session, handle: object, lost: str | None = None) -> dict[str, Any]:
    """Every health fact of one GPU; ``lost`` (the GPU fell off the bus) reads nothing."""
    nvml = session.nvml
    health: dict[str, Any] = {"unknown": {}}
    unknown: dict[str, str] = health["unknown"]

    def read(name: str, reader: Callable[[], Any], not_supported: str = "") -> Any:
        if lost is not None:
            unknown[name] = f"unknown, because {lost}"
            return None
        try:
            return reader()
        except session.error as exc:
            why = session.reason(exc)
            if not_supported and session.is_error(exc, "NotSupported"):
                why = f"{why} ({not_supported})"
            unknown[name] = f"unknown, because {why}"
        except Exception as exc:  # a binding that does not match the driver
            unknown[name] = f"unknown, because the NVML binding failed ({type(exc).__name__})"
        return None

    def reasons() -> list[str]:
        call = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
        if call is None:  # bindings before the rename (CUDA 12.2)
            call = nvml.nvmlDeviceGetCurrentClocksThrottleReasons
        mask = int(call(handle))
        return [name for bit, name, _ in CLOCK_EVENT_REASONS if mask & bit]

    health["clocks_event_reasons"] = read("clocks_event_reasons", reasons)
    health["ecc_volatile_uncorrected"] = read(
        "ecc_volatile_uncorrected",
        lambda: int(
            nvml.nvmlDeviceGetTotalEccErrors(
                handle, NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_VOLATILE_ECC
            )
        ),
        "no ECC on this GPU, or ECC disabled",
    )

    def remapped() -> dict[str, Any]:
        corrected, uncorrected, pending, failure = nvml.nvmlDeviceGetRemappedRows(handle)
        return {
            "corrected": int(corrected),
            "uncorrected": int(uncorrected),
            "pending": bool(pending),
            "failure": bool(failure),
        }

    health["remapped_rows"] = read(
        "remapped_rows", remapped, "row remapping exists from Ampere on, on HBM parts"
    )

    def pcie() -> dict[str, int]:
        return {
            "gen": int(nvml.nvmlDeviceGetCurrPcieLinkGeneration(handle)),
            "max_gen": int(nvml.nvmlDeviceGetMaxPcieLinkGeneration(handle)),
            "width": int(nvml.nvmlDeviceGetCurrPcieLinkWidth(handle)),
            "max_width": int(nvml.nvmlDeviceGetMaxPcieLinkWidth(handle)),
        }

    health["pcie"] = read("pcie", pcie, "no PCIe link reported, e.g. an SoC or NVLink-C2C part")
    persistence = read(
        "persistence_mode", lambda: int(nvml.nvmlDeviceGetPersistenceMode(handle)), "Linux only"
    )
    health["persistence_mode"] = (
        None if persistence is None else persistence == NVML_FEATURE_ENABLED
    )
    return health


def assess(gpu_index: int, health: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(notes, degraded reasons) for one GPU's health facts; both empty when none were read."""
    if not health:
        return [], []
    notes: list[str] = []
    degraded: list[str] = []
    label = f"GPU {gpu_index}"
    events = health.get("clocks_event_reasons")
    if events is not None:
        bad = [name for name in events if name in _DEGRADING]
        if bad:
            degraded.append(f"{label} clocks are held down by {', '.join(bad)}")
        notes.append(f"{label} clock event reasons: {', '.join(events) if events else 'none'}")
    ecc = health.get("ecc_volatile_uncorrected")
    if ecc:
        degraded.append(
            f"{label} has {ecc} volatile uncorrectable ECC error(s) since the driver loaded"
        )
    elif ecc == 0:
        notes.append(f"{label} ECC: no volatile uncorrectable errors")
    rows = health.get("remapped_rows")
    if rows:
        if rows.get("failure"):
            degraded.append(f"{label} row remapping failed (the GPU needs service)")
        elif rows.get("pending"):
            degraded.append(f"{label} has a row remapping pending (applies after a GPU reset)")
        notes.append(
            f"{label} remapped rows: {rows.get('corrected', 0)} corrected, "
            f"{rows.get('uncorrected', 0)} uncorrected"
        )
    link = health.get("pcie")
    if link:
        text = (
            f"PCIe gen {link['gen']} x{link['width']} "
            f"(max gen {link['max_gen']} x{link['max_width']})"
        )
        if link["width"] < link["max_width"]:
            degraded.append(f"{label} {text}: the link runs narrower than it can")
        elif link["gen"] < link["max_gen"]:
            idle = "gpu_idle" in (events or [])
            notes.append(
                f"{label} {text}: below its generation"
                + (" while idle (links train down at idle)" if idle else "; check it under load")
            )
        else:
            notes.append(f"{label} {text}")
    persistence = health.get("persistence_mode")
    if persistence is False:
        notes.append(
            f"{label} persistence mode off: the driver tears down between CUDA processes "
            "(slower first CUDA call; `nvidia-smi -pm 1` or nvidia-persistenced)"
        )
    elif persistence:
        notes.append(f"{label} persistence mode on")
    notes.extend(f"{label} {name}: {why}" for name, why in health.get("unknown", {}).items())
    return notes, degraded


def apply_health(report: Report) -> None:
    """Add each GPU's health notes to ``report.notes``; a degraded GPU makes every GPU verdict
    that was better than "degraded" degraded, with the reason (rule ``gpu-health``)."""
    from pytest_gpuinfer.probes.report import Finding, Status

    reasons: list[str] = []
    for gpu in report.gpus:
        notes, degraded = assess(gpu.index, gpu.health)
        report.notes.extend(notes)
        reasons.extend(degraded)
    if not reasons:
        return
    message = "node health: " + "; ".join(reasons)
    for verdict in report.verdicts.values():
        if verdict.device != "cuda" or verdict.status.rank > Status.DEGRADED.rank:
            continue
        verdict.findings.append(Finding("gpu-health", Status.DEGRADED, message))
        verdict.status = Status.DEGRADED

"""NVML health facts (probes.nvml_health) against the fake NVML, and the verdicts they change."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest
from fakes import nvml_specs

from pytest_gpuinfer.probes.nvml import probe_nvml
from pytest_gpuinfer.probes.nvml_health import apply_health, assess
from pytest_gpuinfer.probes.probe import probe
from pytest_gpuinfer.probes.report import Report, Status

Install = Callable[[dict[str, Any] | None], None]

HW_THERMAL = 0x40
SW_POWER_CAP = 0x4
GPU_IDLE = 0x1


def test_a_healthy_gpu_reads_every_fact(fake_nvml: Install) -> None:
    fake_nvml(nvml_specs.h100())
    [gpu] = probe_nvml({}).gpus
    assert gpu.health == {
        "unknown": {},
        "clocks_event_reasons": [],
        "ecc_volatile_uncorrected": 0,
        "remapped_rows": {"corrected": 0, "uncorrected": 0, "pending": False, "failure": False},
        "pcie": {"gen": 5, "max_gen": 5, "width": 16, "max_width": 16},
        "persistence_mode": True,
    }
    notes, degraded = assess(0, gpu.health)
    assert degraded == []
    assert "GPU 0 PCIe gen 5 x16 (max gen 5 x16)" in notes
    assert "GPU 0 persistence mode on" in notes


def test_thermal_slowdown_makes_gpu_verdicts_degraded_with_the_reason(fake_nvml: Install) -> None:
    spec = nvml_specs.h100()
    spec["gpus"][0]["clocks_event_reasons"] = HW_THERMAL | SW_POWER_CAP
    fake_nvml(spec)
    report = probe()
    for verdict in report.verdicts.values():
        # A CPU build of torch beside the (fake) H100 stays unsupported; all else degrades.
        assert verdict.status in (Status.DEGRADED, Status.UNSUPPORTED)
        if verdict.status is Status.DEGRADED:
            assert "GPU 0 clocks are held down by hw_thermal_slowdown" in verdict.reason
    assert "GPU 0 clock event reasons: sw_power_cap, hw_thermal_slowdown" in report.notes
    # the reason survives the JSON an audit commits
    again = Report.from_dict(report.to_dict())
    assert again.gpus[0].health["clocks_event_reasons"] == ["sw_power_cap", "hw_thermal_slowdown"]


def test_health_degrades_supported_verdicts_only() -> None:
    report = probe(profile="h100")  # supported verdicts, whatever this machine's torch
    supported = [m for m, v in report.verdicts.items() if v.status is Status.SUPPORTED]
    unsupported = [m for m, v in report.verdicts.items() if v.status is Status.UNSUPPORTED]
    assert supported
    report.gpus[0].health = {"ecc_volatile_uncorrected": 2, "unknown": {}}
    apply_health(report)
    for mode in supported:
        verdict = report.verdicts[mode]
        assert verdict.status is Status.DEGRADED
        assert verdict.findings[-1].rule_id == "gpu-health"
        assert verdict.reason.startswith(
            "node health: GPU 0 has 2 volatile uncorrectable ECC error(s)"
        )
    assert all(report.verdicts[m].status is Status.UNSUPPORTED for m in unsupported)


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        ({"ecc_uncorrected": 3}, "GPU 0 has 3 volatile uncorrectable ECC error(s)"),
        ({"remapped_rows": [2, 1, 1, 0]}, "GPU 0 has a row remapping pending"),
        ({"remapped_rows": [0, 4, 0, 1]}, "GPU 0 row remapping failed"),
        (
            {"pcie": {"gen": 4, "max_gen": 4, "width": 8, "max_width": 16}},
            "GPU 0 PCIe gen 4 x8 (max gen 4 x16): the link runs narrower than it can",
        ),
    ],
)
def test_each_degrading_fact(fake_nvml: Install, facts: dict[str, Any], expected: str) -> None:
    spec = nvml_specs.h100()
    spec["gpus"][0].update(facts)
    fake_nvml(spec)
    [gpu] = probe_nvml({}).gpus
    _, degraded = assess(gpu.index, gpu.health)
    assert len(degraded) == 1
    assert degraded[0].startswith(expected)


def test_an_idle_link_below_its_generation_is_a_note_not_degraded(fake_nvml: Install) -> None:
    spec = nvml_specs.t4()
    spec["gpus"][0].update(
        clocks_event_reasons=GPU_IDLE,
        pcie={"gen": 1, "max_gen": 3, "width": 16, "max_width": 16},
        persistence=0,
    )
    fake_nvml(spec)
    [gpu] = probe_nvml({}).gpus
    notes, degraded = assess(gpu.index, gpu.health)
    assert degraded == []
    assert (
        "GPU 0 PCIe gen 1 x16 (max gen 3 x16): below its generation while idle "
        "(links train down at idle)" in notes
    )
    assert any(n.startswith("GPU 0 persistence mode off") for n in notes)


def test_every_failing_call_is_unknown_because(fake_nvml: Install) -> None:
    spec = nvml_specs.gtx1660()
    spec["gpus"][0]["fail"] = {
        "clocks_event": "RuntimeError",
        "ecc": "NotSupported",
        "remapped": "NotSupported",
        "pcie": "NoPermission",
        "persistence": "FunctionNotFound",
    }
    fake_nvml(spec)
    [gpu] = probe_nvml({}).gpus
    assert gpu.name == "NVIDIA GeForce GTX 1660 SUPER"  # the rest of the GPU is still read
    unknown = gpu.health["unknown"]
    assert unknown == {
        "clocks_event_reasons": "unknown, because the NVML binding failed (RuntimeError)",
        "ecc_volatile_uncorrected": (
            "unknown, because NVML: Not Supported (no ECC on this GPU, or ECC disabled)"
        ),
        "remapped_rows": (
            "unknown, because NVML: Not Supported "
            "(row remapping exists from Ampere on, on HBM parts)"
        ),
        "pcie": "unknown, because NVML: Insufficient Permissions",
        "persistence_mode": "unknown, because NVML: Function Not Found",
    }
    assert all(gpu.health[name] is None for name in unknown)
    notes, degraded = assess(0, gpu.health)
    assert degraded == []
    assert "GPU 0 pcie: unknown, because NVML: Insufficient Permissions" in notes


def test_old_bindings_read_the_throttle_name(fake_nvml: Install) -> None:
    spec = nvml_specs.h100()
    spec["legacy_bindings"] = True
    spec["gpus"][0]["clocks_event_reasons"] = SW_POWER_CAP
    fake_nvml(spec)
    [gpu] = probe_nvml({}).gpus
    assert gpu.health["clocks_event_reasons"] == ["sw_power_cap"]
    calls: list[str] = sys.modules["pynvml"].calls
    assert "nvmlDeviceGetCurrentClocksThrottleReasons" in calls


def test_a_lost_gpu_is_not_asked_for_its_health(fake_nvml: Install) -> None:
    spec = nvml_specs.h100()
    spec["gpus"][0]["fail"] = {"memory_v2": "GpuIsLost", "memory": "GpuIsLost"}
    fake_nvml(spec)
    [gpu] = probe_nvml({}).gpus
    assert gpu.health["pcie"] is None
    assert gpu.health["unknown"]["pcie"] == "unknown, because NVML: GPU is lost"
    calls: list[str] = sys.modules["pynvml"].calls
    assert "nvmlDeviceGetCurrPcieLinkGeneration" not in calls

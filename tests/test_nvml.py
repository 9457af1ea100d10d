"""probes.nvml against the fake NVML in tests/fakes (and once against the real bindings)."""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes import nvml_specs

from pytest_gpuinfer.probes.nvml import NvmlProbe, format_cuda_version, probe_nvml

ROOT = Path(__file__).resolve().parents[1]
Install = Callable[[dict[str, Any] | None], None]
MEMORY = ("total_memory_bytes", "free_memory_bytes", "used_memory_bytes")


def fake_calls() -> list[str]:
    calls: list[str] = sys.modules["pynvml"].calls
    return calls


def probe(fake_nvml: Install, spec: dict[str, Any] | None, **environ: str) -> NvmlProbe:
    fake_nvml(spec)
    return probe_nvml(environ)


def test_healthy_h100(fake_nvml: Install) -> None:
    result = probe(fake_nvml, nvml_specs.h100())
    assert result.unavailable_reason is None
    assert result.all_device_count == 1
    assert result.warnings == []
    [gpu] = result.gpus
    assert (gpu.index, gpu.cuda_ordinal) == (0, 0)
    assert gpu.name == "NVIDIA H100 80GB HBM3"
    assert gpu.uuid == nvml_specs.H100_UUID
    assert gpu.pci_bus_id == "00000000:01:00.0"
    assert gpu.compute_capability == (9, 0)
    assert gpu.architecture == "Hopper"
    assert gpu.has_tensor_cores is True
    assert gpu.total_memory_bytes == int(79.6 * 2**30)
    assert gpu.free_memory_bytes == gpu.total_memory_bytes - 2**29
    assert gpu.used_memory_bytes == 0  # v2: driver-reserved memory is not "used"
    assert gpu.mig_mode is False
    assert gpu.unknown == {}
    assert result.driver.driver_version == "580.65.06"
    assert result.driver.cuda_driver_version == "13.0"
    assert result.driver.nvml_version == "13.580.65.06"
    assert result.driver.unknown == {}


def test_init_and_shutdown_once_per_probe(fake_nvml: Install) -> None:
    probe(fake_nvml, nvml_specs.a100_x4())
    calls = fake_calls()
    assert calls.count("nvmlInit") == 1
    assert calls[-1] == "nvmlShutdown"
    assert calls.count("nvmlShutdown") == 1


def test_visible_devices_pick_and_order_the_gpus(fake_nvml: Install) -> None:
    result = probe(fake_nvml, nvml_specs.a100_x4(), CUDA_VISIBLE_DEVICES="2,0")
    assert [(g.index, g.cuda_ordinal) for g in result.gpus] == [(2, 0), (0, 1)]
    assert result.gpus[0].pci_bus_id == "00000000:03:00.0"
    assert result.all_device_count == 4
    assert result.unavailable_reason is None


def test_visible_devices_hiding_everything_is_the_reason(fake_nvml: Install) -> None:
    result = probe(fake_nvml, nvml_specs.a100_x4(), CUDA_VISIBLE_DEVICES="")
    assert result.gpus == []
    assert result.unavailable_reason == "CUDA_VISIBLE_DEVICES='' hides all 4 NVIDIA GPU(s)"


def test_mixed_box_default_order_is_fastest_first(fake_nvml: Install) -> None:
    result = probe(fake_nvml, nvml_specs.v100_a100(), CUDA_VISIBLE_DEVICES="0")
    assert [g.name for g in result.gpus] == ["NVIDIA A100-SXM4-80GB"]
    assert any("approximation" in w for w in result.warnings)
    result = probe_nvml({"CUDA_VISIBLE_DEVICES": "0", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
    assert [g.name for g in result.gpus] == ["Tesla V100-SXM2-16GB"]


def test_old_bindings_fall_back_to_memory_v1(fake_nvml: Install) -> None:
    spec = nvml_specs.h100()
    spec["legacy_bindings"] = True
    result = probe(fake_nvml, spec)
    [gpu] = result.gpus
    assert gpu.unknown == {}
    assert gpu.total_memory_bytes is not None and gpu.free_memory_bytes is not None
    assert gpu.used_memory_bytes == gpu.total_memory_bytes - gpu.free_memory_bytes
    assert "nvmlSystemGetCudaDriverVersion_v2" not in fake_calls()
    assert result.driver.cuda_driver_version == "13.0"


@pytest.mark.parametrize("failure", ["FunctionNotFound", "NotSupported", "TypeError"])
def test_memory_v2_failing_falls_back_to_v1(fake_nvml: Install, failure: str) -> None:
    spec = nvml_specs.h100()
    spec["gpus"][0]["fail"] = {"memory_v2": failure}
    [gpu] = probe(fake_nvml, spec).gpus
    assert gpu.unknown == {}
    assert gpu.total_memory_bytes == int(79.6 * 2**30)


def test_unified_memory_not_supported_is_unknown_with_reason(fake_nvml: Install) -> None:
    spec = nvml_specs.machine(nvml_specs.gpu("NVIDIA GB10", (12, 1), 0))
    spec["gpus"][0]["fail"] = {"memory_v2": "NotSupported", "memory": "NotSupported"}
    [gpu] = probe(fake_nvml, spec).gpus
    for name in MEMORY:
        assert getattr(gpu, name) is None
        assert gpu.unknown[name].startswith("NVML: Not Supported")
        assert "unified memory" in gpu.unknown[name]
    assert gpu.compute_capability == (12, 1)


def test_zero_total_memory_is_unknown(fake_nvml: Install) -> None:
    spec = nvml_specs.machine(nvml_specs.gpu("NVIDIA Jetson", (8, 7), 0, free_gib=0))
    [gpu] = probe(fake_nvml, spec).gpus
    assert gpu.total_memory_bytes is None
    assert "0 bytes" in gpu.unknown["total_memory_bytes"]


def test_field_failure_leaves_that_field_unknown(fake_nvml: Install) -> None:
    spec = nvml_specs.h100()
    spec["gpus"][0]["fail"] = {"cc": "NotSupported", "uuid": "NoPermission"}
    [gpu] = probe(fake_nvml, spec).gpus
    assert gpu.compute_capability is None
    assert gpu.unknown["compute_capability"] == "NVML: Not Supported"
    assert gpu.unknown["architecture"] == "compute capability unknown"
    assert gpu.has_tensor_cores is None
    assert gpu.unknown["uuid"] == "NVML: Insufficient Permissions"
    assert gpu.name == "NVIDIA H100 80GB HBM3"
    assert gpu.total_memory_bytes is not None


def test_gpu_lost_mid_probe_is_listed_with_what_is_known(fake_nvml: Install) -> None:
    spec = nvml_specs.a100_x4()
    spec["gpus"][1]["fail"] = {"memory_v2": "GpuIsLost", "memory": "GpuIsLost"}
    result = probe(fake_nvml, spec)
    assert [g.index for g in result.gpus] == [0, 1, 2, 3]
    lost = result.gpus[1]
    assert lost.name == "NVIDIA A100-SXM4-40GB"
    assert lost.compute_capability == (8, 0)
    for name in (*MEMORY, "mig_mode"):
        assert lost.unknown[name] == "NVML: GPU is lost"
    assert any("GPU 1 is lost" in w for w in result.warnings)
    assert fake_calls().count("nvmlDeviceGetMigMode") == 3  # the lost GPU is not asked again
    assert result.gpus[2].unknown == {}


def test_gpu_lost_before_its_handle_opens(fake_nvml: Install) -> None:
    spec = nvml_specs.a100_x4()
    spec["gpus"][1]["fail"] = {"handle": "GpuIsLost"}
    result = probe(fake_nvml, spec, CUDA_DEVICE_ORDER="PCI_BUS_ID")
    lost = result.gpus[1]
    assert (lost.index, lost.cuda_ordinal, lost.name) == (1, 1, None)
    assert lost.unknown["name"] == "NVML: GPU is lost"
    assert lost.unknown["total_memory_bytes"] == "NVML: GPU is lost"
    assert any("GPU 1 could not be opened" in w for w in result.warnings)


def test_no_nvml_library(fake_nvml: Install) -> None:
    result = probe(fake_nvml, nvml_specs.NO_DRIVER)
    assert result.gpus == []
    assert result.unavailable_reason == "NVML library not found (no NVIDIA driver installed?)"
    assert result.all_device_count is None


def test_driver_not_loaded(fake_nvml: Install) -> None:
    result = probe(fake_nvml, nvml_specs.driver_not_loaded())
    assert result.gpus == []
    assert result.unavailable_reason is not None
    assert result.unavailable_reason.startswith("NVIDIA driver not loaded")
    assert "nvmlShutdown" not in fake_calls()  # never initialised, nothing to shut down


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        ("NoPermission", "no permission to use the NVIDIA devices"),
        ("LibRmVersionMismatch", "the NVML library and the loaded NVIDIA kernel driver differ"),
        ("Unknown", "NVML initialisation failed (NVML: Unknown Error)"),
    ],
)
def test_other_init_failures(fake_nvml: Install, failure: str, reason: str) -> None:
    result = probe(fake_nvml, {"fail": {"init": failure}})
    assert result.unavailable_reason is not None
    assert result.unavailable_reason.startswith(reason)


def test_no_gpu_at_all(fake_nvml: Install) -> None:
    result = probe(fake_nvml, nvml_specs.machine())
    assert result.gpus == []
    assert result.all_device_count == 0
    assert result.unavailable_reason == "NVML found no NVIDIA GPU"
    assert result.driver.driver_version == "580.65.06"


def test_count_failure_keeps_the_driver(fake_nvml: Install) -> None:
    spec = nvml_specs.h100()
    spec["fail"] = {"count": "Unknown"}
    result = probe(fake_nvml, spec)
    assert result.unavailable_reason == "NVML could not count the GPUs (NVML: Unknown Error)"
    assert result.driver.driver_version == "580.65.06"
    assert fake_calls()[-1] == "nvmlShutdown"


def test_old_bindings_return_bytes(fake_nvml: Install) -> None:
    spec = nvml_specs.h100()
    spec["bytes"] = True
    result = probe(fake_nvml, spec)
    [gpu] = result.gpus
    assert gpu.name == "NVIDIA H100 80GB HBM3"
    assert gpu.uuid == nvml_specs.H100_UUID
    assert gpu.pci_bus_id == "00000000:01:00.0"
    assert result.driver.driver_version == "580.65.06"
    assert result.driver.nvml_version == "13.580.65.06"


def test_driver_fields_fail_one_by_one(fake_nvml: Install) -> None:
    spec = nvml_specs.t4()
    spec["fail"] = {"driver": "NotSupported", "cuda_driver_v2": "FunctionNotFound"}
    driver = probe(fake_nvml, spec).driver
    assert driver.driver_version is None
    assert driver.unknown == {"driver_version": "NVML: Not Supported"}
    assert driver.cuda_driver_version == "12.2"  # v1 after v2's FunctionNotFound


def test_mig_enabled(fake_nvml: Install) -> None:
    mig_uuids = [
        "MIG-5c89f2a1-8b2e-5d0a-9f3e-1c2d3e4f5a6b",
        "MIG-7e01b3c4-0d1e-5f2a-8b3c-4d5e6f7a8b9c",
    ]
    spec = nvml_specs.a100_x4()
    spec["gpus"][3].update(mig=True, mig_devices=mig_uuids)
    result = probe(fake_nvml, spec)
    assert [g.mig_mode for g in result.gpus] == [False, False, False, True]
    assert any("GPU 3 is in MIG mode" in w for w in result.warnings)

    result = probe_nvml({"CUDA_VISIBLE_DEVICES": "MIG-7e01"})
    [gpu] = result.gpus
    assert (gpu.index, gpu.cuda_ordinal, gpu.mig_mode) == (3, 0, True)
    assert any(f"MIG device {mig_uuids[1]} of GPU 3" in w for w in result.warnings)


def test_mig_listing_failure_is_a_warning(fake_nvml: Install) -> None:
    spec = nvml_specs.h100()
    spec["gpus"][0].update(mig=True, mig_devices=["MIG-5c89"], fail={"mig_count": "NoPermission"})
    result = probe(fake_nvml, spec)
    assert result.gpus[0].mig_mode is True
    assert any("could not list its MIG devices" in w for w in result.warnings)


def test_mig_not_supported_is_unknown_not_false(fake_nvml: Install) -> None:
    spec = nvml_specs.t4()
    spec["gpus"][0]["fail"] = {"mig": "NotSupported"}
    [gpu] = probe(fake_nvml, spec).gpus
    assert gpu.mig_mode is None
    assert gpu.unknown["mig_mode"] == "not supported by this GPU"


def test_mig_change_pending_is_a_warning(fake_nvml: Install) -> None:
    spec = nvml_specs.h100()
    spec["gpus"][0]["mig_pending"] = True
    result = probe(fake_nvml, spec)
    assert result.gpus[0].mig_mode is False
    assert any("MIG mode change pending" in w for w in result.warnings)


def test_tensor_cores_by_name(fake_nvml: Install) -> None:
    [gpu] = probe(fake_nvml, nvml_specs.gtx1660()).gpus
    assert (gpu.architecture, gpu.has_tensor_cores) == ("Turing", False)
    spec = nvml_specs.t4()
    spec["gpus"][0]["fail"] = {"name": "NotSupported"}
    [gpu] = probe(fake_nvml, spec).gpus
    assert gpu.has_tensor_cores is None
    assert "GTX 16xx" in gpu.unknown["has_tensor_cores"]


@pytest.mark.parametrize("error", ["TypeError", "RuntimeError"])
@pytest.mark.parametrize(
    ("call", "field"),
    [
        ("name", "name"),
        ("uuid", "uuid"),
        ("pci", "pci_bus_id"),
        ("cc", "compute_capability"),
        ("mig", "mig_mode"),
    ],
)
def test_unexpected_exception_for_one_field_makes_only_that_field_unknown(
    fake_nvml: Install, error: str, call: str, field: str
) -> None:
    spec = nvml_specs.a100_x4()
    spec["gpus"][1]["fail"] = {call: error}
    result = probe(fake_nvml, spec)
    assert result.unavailable_reason is None
    by_index = {gpu.index: gpu for gpu in result.gpus}
    assert sorted(by_index) == [0, 1, 2, 3]
    broken = by_index.pop(1)
    assert getattr(broken, field) is None
    assert broken.unknown[field] == (
        f"the NVML binding failed unexpectedly ({error}: fake NVML failure ({error}))"
    )
    assert broken.total_memory_bytes == 40 * 2**30
    for gpu in by_index.values():
        assert gpu.unknown == {}
        assert gpu.compute_capability == (8, 0)
    assert fake_calls()[-1] == "nvmlShutdown"


@pytest.mark.parametrize("error", ["TypeError", "RuntimeError"])
def test_unexpected_exception_for_memory_makes_only_memory_unknown(
    fake_nvml: Install, error: str
) -> None:
    spec = nvml_specs.h100()
    spec["gpus"][0]["fail"] = {"memory_v2": error, "memory": error}
    [gpu] = probe(fake_nvml, spec).gpus
    for name in MEMORY:
        assert getattr(gpu, name) is None
        assert error in gpu.unknown[name]
    assert gpu.compute_capability == (9, 0)
    assert gpu.name == "NVIDIA H100 80GB HBM3"


@pytest.mark.parametrize("error", ["TypeError", "RuntimeError"])
@pytest.mark.parametrize("call", ["handle", "*"])
def test_unexpected_exception_for_one_gpu_keeps_the_others(
    fake_nvml: Install, error: str, call: str
) -> None:
    spec = nvml_specs.a100_x4()
    spec["gpus"][2]["fail"] = {call: error}
    result = probe(fake_nvml, spec)
    assert result.unavailable_reason is None
    by_index = {gpu.index: gpu for gpu in result.gpus}
    assert sorted(by_index) == [0, 1, 2, 3]
    broken = by_index.pop(2)
    assert broken.compute_capability is None
    assert error in broken.unknown["compute_capability"]
    if call == "handle":
        assert any(w.startswith("GPU 2 could not") and error in w for w in result.warnings)
    assert all(gpu.compute_capability == (8, 0) for gpu in by_index.values())
    assert fake_calls()[-1] == "nvmlShutdown"


@pytest.mark.parametrize("error", ["TypeError", "RuntimeError"])
def test_unexpected_exception_for_a_driver_field_keeps_the_gpus(
    fake_nvml: Install, error: str
) -> None:
    spec = nvml_specs.h100()
    spec["fail"] = {"driver": error, "cuda_driver_v2": error, "shutdown": error}
    result = probe(fake_nvml, spec)
    assert len(result.gpus) == 1
    assert result.driver.driver_version is None
    assert error in result.driver.unknown["driver_version"]
    assert result.driver.cuda_driver_version is None
    assert result.driver.nvml_version == "13.580.65.06"


def test_unexpected_exception_counting_gpus_is_the_reason(fake_nvml: Install) -> None:
    spec = nvml_specs.h100()
    spec["fail"] = {"count": "RuntimeError"}
    result = probe(fake_nvml, spec)
    assert result.gpus == []
    assert result.unavailable_reason == (
        "NVML could not count the GPUs (the NVML binding failed unexpectedly "
        "(RuntimeError: fake NVML failure (RuntimeError)))"
    )
    assert fake_calls()[-1] == "nvmlShutdown"


def test_unexpected_exception_at_init_is_the_reason(fake_nvml: Install) -> None:
    spec = nvml_specs.h100()
    spec["fail"] = {"init": "RuntimeError"}
    result = probe(fake_nvml, spec)
    assert result.gpus == []
    assert result.unavailable_reason is not None
    assert "RuntimeError" in result.unavailable_reason


def test_failed_shutdown_keeps_the_readings(fake_nvml: Install) -> None:
    spec = nvml_specs.h100()
    spec["fail"] = {"shutdown": "Unknown"}
    assert len(probe(fake_nvml, spec).gpus) == 1


def test_pynvml_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail
    result = probe_nvml({})
    assert result.gpus == []
    assert result.unavailable_reason is not None
    assert result.unavailable_reason.startswith("nvidia-ml-py is not installed")


def test_spec_from_a_file(
    fake_nvml: Install, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_nvml(None)
    path = tmp_path / "machine.json"
    path.write_text(json.dumps(nvml_specs.t4()), encoding="utf-8")
    monkeypatch.setenv("GPUINFER_FAKE_NVML", str(path))
    assert [g.name for g in probe_nvml({}).gpus] == ["Tesla T4"]


def test_subprocesses_get_the_fake(fake_nvml: Install) -> None:
    fake_nvml(nvml_specs.t4())
    code = "from pytest_gpuinfer.probes.nvml import probe_nvml; print(probe_nvml().gpus[0].name)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "Tesla T4"


def test_importing_the_probe_does_not_import_pynvml() -> None:
    code = "import sys, pytest_gpuinfer.probes.nvml; print('pynvml' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_real_bindings_on_this_machine_do_not_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    module = sys.modules.get("pynvml")
    if module is not None and "fakes" in Path(getattr(module, "__file__", "") or "").parts:
        monkeypatch.delitem(sys.modules, "pynvml")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if not p.endswith("fakes")])
    result = probe_nvml(dict(os.environ))
    assert "fakes" not in Path(sys.modules["pynvml"].__file__ or "").parts
    if ctypes.util.find_library("nvidia-ml") is None:
        assert result.gpus == []
        assert result.unavailable_reason == "NVML library not found (no NVIDIA driver installed?)"
    else:  # a GPU machine: either GPUs or a reason, never an exception
        assert bool(result.gpus) != bool(result.unavailable_reason)


@pytest.mark.parametrize(("value", "text"), [(13000, "13.0"), (12040, "12.4"), (11080, "11.8")])
def test_format_cuda_version(value: int, text: str) -> None:
    assert format_cuda_version(value) == text

"""probes.probe end to end against a fake NVML, and the import-cost promise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes import nvml_specs

from pytest_gpuinfer.probes import probe
from pytest_gpuinfer.probes.report import NativeCheck, Report, Status
from pytest_gpuinfer.probes.software import probe_software, verify_bitsandbytes

Install = Callable[[dict[str, Any] | None], None]


def test_probe_reads_fake_gpus_and_never_raises(fake_nvml: Install) -> None:
    spec = nvml_specs.a100_x4()
    spec["gpus"][2]["fail"] = {"memory": "GpuIsLost", "cc": "GpuIsLost"}
    fake_nvml(spec)
    report = probe(environ={"CUDA_VISIBLE_DEVICES": "2,3", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
    assert [g.index for g in report.gpus] == [2, 3]
    lost = report.gpus[0]
    assert lost.compute_capability is None
    assert "compute_capability" in lost.unknown
    assert "lost" in lost.unknown["compute_capability"].lower()
    if probe_software().torch_cuda is None:
        # A CPU build of torch outranks the unknown on a real GPU box.
        assert report.verdicts["bf16"].status is Status.UNSUPPORTED
    else:  # the GPU machine: the lost GPU's unknown capability decides
        assert report.verdicts["bf16"].status is Status.UNKNOWN
        assert "unknown, because" in report.verdicts["bf16"].reason
    assert report.visible_devices == "2,3"


def test_probe_without_driver(fake_nvml: Install) -> None:
    fake_nvml(nvml_specs.NO_DRIVER)
    report = probe()
    assert report.gpus == []
    assert report.gpu_unavailable_reason
    assert all(v.device == "cpu" for v in report.verdicts.values())
    assert report.verdicts["fastpath"].status is Status.SUPPORTED


def test_simulated_profile_assumes_a_cuda_torch_and_keeps_local_versions() -> None:
    report = probe("t4")
    assert report.simulated and report.profile == "t4"
    assert report.software.assumed_torch_build
    assert report.software.packages["transformers"] == probe_software().packages["transformers"]
    # A CPU torch on the auditing machine does not make the simulated GPU unsupported.
    assert report.verdicts["fp16"].status is Status.SUPPORTED
    assert report.verdicts["bf16"].status is Status.UNSUPPORTED


def test_report_json_round_trip() -> None:
    report = probe("h200")
    data = json.loads(json.dumps(report.to_dict()))
    assert Report.from_dict(data).to_dict() == data


def test_report_rejects_unknown_schema_version() -> None:
    data = probe("h200").to_dict()
    data["schema_version"] = "99"
    with pytest.raises(ValueError, match="schema_version '99' is not supported"):
        Report.from_dict(data)


def test_importing_plugin_and_probes_imports_nothing_heavy() -> None:
    code = (
        "import sys, pytest_gpuinfer.probes.probe, pytest_gpuinfer.probes.rules, "
        "pytest_gpuinfer.probes.nvml, pytest_gpuinfer.probes.memory_fit, "
        "pytest_gpuinfer, pytest_gpuinfer.cli.main\n"
        "heavy = [m for m in ('torch', 'transformers', 'bitsandbytes', 'accelerate', 'pynvml') "
        "if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bitsandbytes_native_check_runs_and_caches(tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes")
    stack = probe_software()
    env = {"GPUINFER_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    if "PYTHONPATH" in os.environ:  # bitsandbytes may come from a carried --target dir
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    first = verify_bitsandbytes(stack, device="cpu", environ=env)
    assert first.state == "passed", first.detail
    assert "int8 matmul on cpu" in first.detail and not first.cached
    second = verify_bitsandbytes(stack, device="cpu", environ=env)
    assert second.cached and second.state == "passed"


def test_bitsandbytes_native_failure_is_reported_not_raised(tmp_path: Path) -> None:
    stack = probe_software()
    stack.packages["bitsandbytes"] = stack.packages.get("bitsandbytes") or "0.50.2"
    # A child that cannot import anything: PYTHONPATH to nowhere and isolated mode.
    env = {"GPUINFER_CACHE_DIR": str(tmp_path), "PYTHONNOUSERSITE": "1", "PATH": "/usr/bin"}
    check = verify_bitsandbytes(stack, device="cpu", environ=env, timeout=0.01)
    assert check.state == "failed"
    assert isinstance(check, NativeCheck) and check.detail


def test_fast_version_scan_agrees_with_importlib_metadata() -> None:
    from importlib import metadata

    from pytest_gpuinfer.probes.software import PACKAGES

    found = probe_software().packages
    for name in PACKAGES:
        try:
            expected: str | None = metadata.version(name)
        except metadata.PackageNotFoundError:
            expected = None
        assert found[name] == expected, name

"""Header, summary, JSON report, JUnit properties and pytest-benchmark machine info."""

from __future__ import annotations

import json
import socket
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes import nvml_specs

from pytest_gpuinfer.plugin.reporting import (
    Recorder,
    header_lines,
    summary_lines,
    write_json_atomically,
)
from pytest_gpuinfer.probes.report import MODES, DriverInfo, Report, SoftwareStack, Status, Verdict

pytest_plugins = ["pytester"]

InstallNvml = Callable[[dict[str, Any] | None], None]

SUITE = """
import pytest

@pytest.mark.gpuinfer(modes=["fp32", "bf16"])
def test_modes(inference_mode):
    pass

@pytest.mark.gpuinfer(compute_capability=">=8.0")
def test_ampere():
    pass

@pytest.mark.gpuinfer(gpus=1)
def test_fails():
    assert False

def test_plain():
    pass
"""


def test_header_on_a_fake_h100(pytester: pytest.Pytester, fake_nvml: InstallNvml) -> None:
    fake_nvml(nvml_specs.h100())
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--gpuinfer")
    result.stdout.fnmatch_lines(
        [
            "gpuinfer: 1 GPU visible (CUDA_VISIBLE_DEVICES=unset)",
            "gpuinfer: GPU 0: NVIDIA H100 80GB HBM3, cc 9.0, 79.10 GiB free of 79.60 GiB",
            "gpuinfer: stack: python 3.*, torch *, transformers *, accelerate *, "
            "bitsandbytes *, optimum *, driver 580.65.06",
            "gpuinfer: modes: fp32 *, fp16 *, bf16 *, int8 *, nf4 *, fastpath *",
        ],
        consecutive=True,
    )


def test_header_with_a_profile_says_it_is_simulated(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--gpuinfer-profile", "t4", "--gpuinfer-strict")
    result.stdout.fnmatch_lines(
        [
            "gpuinfer: simulated profile t4: 1 GPU (not this machine's hardware; tests that "
            "would run on it are skipped); strict: unmet requirements fail",
            "gpuinfer: GPU 0: Tesla T4, cc 7.5, 15.00 GiB free of 15.00 GiB",
            "gpuinfer: stack: *torch * (CUDA build assumed)*",
            "gpuinfer: modes: fp32 supported, fp16 supported, bf16 unsupported, int8 supported, "
            "nf4 supported, fastpath supported",
        ],
        consecutive=True,
    )


def test_header_without_a_gpu(pytester: pytest.Pytester, fake_nvml: InstallNvml) -> None:
    fake_nvml(nvml_specs.NO_DRIVER)
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--gpuinfer")
    result.stdout.fnmatch_lines(["gpuinfer: no GPU: *", "gpuinfer: stack: *", "gpuinfer: modes: *"])


def test_summary_counts_per_mode_and_skip_reasons(
    pytester: pytest.Pytester, fake_nvml: InstallNvml
) -> None:
    fake_nvml(nvml_specs.t4())
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest("--gpuinfer")
    result.assert_outcomes(passed=1, failed=1, skipped=3)
    result.stdout.fnmatch_lines(
        [
            "*= gpuinfer summary =*",
            "mode   passed   failed  skipped",
            "fp32        0        0        1",
            "bf16        0        0        1",
            "-           0        1        1",
            "skip reasons:",
            "    1 x mode bf16 is unsupported: *[[]rule *[]]",
            "    1 x mode fp32 is unsupported: *[[]rule *[]]",
            "    1 x needs compute_capability >=8.0; found GPU 0 Tesla T4 (7.5)",
        ],
        consecutive=True,
    )


def test_summary_without_gpuinfer_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--gpuinfer")
    result.stdout.fnmatch_lines(
        ["*= gpuinfer summary =*", "no test used the gpuinfer marker or fixtures"]
    )


def test_json_report(pytester: pytest.Pytester, fake_nvml: InstallNvml) -> None:
    fake_nvml(nvml_specs.t4())
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest("--gpuinfer", "--gpuinfer-report", "out.json")
    result.stdout.fnmatch_lines([f"gpuinfer report: {pytester.path / 'out.json'}"])
    data = json.loads((pytester.path / "out.json").read_text())
    assert data["schema_version"] == "2"
    assert data["machine"] == {
        "name": socket.gethostname(),
        "hostname": socket.gethostname(),
        "profile": None,
        "visible_devices": None,
        "gpu_summary": "1 x Tesla T4 (7.5)",
        "gpus": [
            {
                "name": "Tesla T4",
                "uuid": nvml_specs.t4()["gpus"][0]["uuid"],
                "compute_capability": "7.5",
                "total_memory_bytes": 15 * 2**30,
            }
        ],
    }
    assert data["exitstatus"] == 1
    assert data["settings"]["enabled"] is True
    probe = Report.from_dict(data["probe"])
    assert [gpu.name for gpu in probe.gpus] == ["Tesla T4"]
    assert data["summary"] == {"failed": 1, "passed": 1, "skipped": 3}
    tests = {t["nodeid"]: t for t in data["tests"]}
    assert set(tests) == {
        "test_suite.py::test_modes[fp32]",
        "test_suite.py::test_modes[bf16]",
        "test_suite.py::test_ampere",
        "test_suite.py::test_fails",
        "test_suite.py::test_plain",
    }
    bf16 = tests["test_suite.py::test_modes[bf16]"]
    assert (bf16["outcome"], bf16["state"]) == ("skipped", "cannot run")
    assert bf16["mode"] == "bf16"
    assert bf16["requirements"] == {"modes": ["fp32", "bf16"]}
    assert bf16["skip_reason"].startswith("mode bf16 is unsupported")
    ampere = tests["test_suite.py::test_ampere"]
    assert ampere == {
        "nodeid": "test_suite.py::test_ampere",
        "outcome": "skipped",
        "state": "cannot run",
        "mode": None,
        "requirements": {"compute_capability": ">=8.0"},
        "skip_reason": "needs compute_capability >=8.0; found GPU 0 Tesla T4 (7.5)",
        "worker": None,
        "visible_devices": None,
    }
    assert tests["test_suite.py::test_fails"]["state"] == "failed"
    assert tests["test_suite.py::test_plain"]["state"] == "passed"
    assert not list(pytester.path.glob(".out.json.*"))  # no temporary file left behind


def test_json_report_names_the_machine(pytester: pytest.Pytester, fake_nvml: InstallNvml) -> None:
    fake_nvml(nvml_specs.a100_x4())
    pytester.makepyfile("def test_x(): pass")
    pytester.runpytest("--gpuinfer-profile", "t4", "--gpuinfer-report", "sim.json")
    simulated = json.loads((pytester.path / "sim.json").read_text())["machine"]
    assert simulated["name"] == f"{socket.gethostname()} profile=t4"
    assert simulated["gpu_summary"] == "1 x Tesla T4 (7.5)"
    pytester.runpytest("--gpuinfer", "--gpuinfer-machine", "ci-a100", "--gpuinfer-report", "a.json")
    named = json.loads((pytester.path / "a.json").read_text())["machine"]
    assert named["name"] == "ci-a100"
    assert named["gpu_summary"] == "4 x NVIDIA A100-SXM4-40GB (8.0)"


def test_json_written_atomically_replaces_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    target.write_text("old")
    write_json_atomically(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_json_write_failure_leaves_no_temporary_file(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_json_atomically(tmp_path / "r.json", {"a": object()})
    assert list(tmp_path.iterdir()) == []


def test_junit_xml_carries_the_hardware(pytester: pytest.Pytester, fake_nvml: InstallNvml) -> None:
    fake_nvml(nvml_specs.a100_x4())
    pytester.makepyfile("def test_x(): pass")
    pytester.runpytest("--gpuinfer", "--junitxml", "junit.xml").assert_outcomes(passed=1)
    root = ET.parse(pytester.path / "junit.xml").getroot()
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["gpuinfer_gpu_count"] == "4"
    assert props["gpuinfer_gpu0"] == "NVIDIA A100-SXM4-40GB, cc 8.0, 39.50 GiB free of 40.00 GiB"
    assert props["gpuinfer_driver"] == "580.65.06"
    assert set(f"gpuinfer_mode_{m}" for m in MODES) <= set(props)


def test_benchmark_machine_info(pytester: pytest.Pytester) -> None:
    pytest.importorskip("pytest_benchmark")
    pytester.makepyfile(
        """
        def test_bench(benchmark):
            benchmark(lambda: None)
        """
    )
    result = pytester.runpytest(
        "--gpuinfer-profile", "h100", "--benchmark-json", "bench.json", "-p", "no:randomly"
    )
    result.assert_outcomes(passed=1)
    info = json.loads((pytester.path / "bench.json").read_text())["machine_info"]["gpuinfer"]
    assert info["profile"] == "h100"
    assert info["gpus"][0]["compute_capability"] == "9.0"
    assert info["modes"]["int8"] == "supported"


# -- the pure pieces ----------------------------------------------------------------------


def _report(**verdicts: Status) -> Report:
    return Report(
        gpus=[],
        driver=DriverInfo(),
        software=SoftwareStack(python="3.11.0", platform="linux", packages={"torch": None}),
        verdicts={mode: Verdict(mode, status) for mode, status in verdicts.items()},
        gpu_unavailable_reason="NVML library not found",
    )


def test_header_lines_by_hand() -> None:
    report = _report(fp32=Status.SUPPORTED, int8=Status.UNKNOWN)
    assert header_lines(report, strict=False) == [
        "gpuinfer: no GPU: NVML library not found",
        "gpuinfer: stack: python 3.11.0, torch not installed, transformers not installed, "
        "accelerate not installed, bitsandbytes not installed, optimum not installed",
        "gpuinfer: modes: fp32 supported, int8 unknown",
    ]


def test_summary_lines_by_hand() -> None:
    recorder = Recorder()
    for nodeid, mode, outcome, reason in [
        ("a[int8]", "int8", "passed", None),
        ("b[int8]", "int8", "skipped", "Skipped: too old"),
        ("c[fp16]", "fp16", "skipped", "Skipped: too old"),
        ("d", None, "failed", None),
    ]:
        data: dict[str, Any] = {"mode": mode, "requirements": {}, "gpu_test": True}
        when = "setup" if outcome == "skipped" else "call"
        longrepr = ("f.py", 1, reason) if reason else None
        if when == "call":
            recorder.add(
                nodeid=nodeid,
                when="setup",
                outcome="passed",
                longrepr=None,
                wasxfail=False,
                data=data,
            )
        recorder.add(
            nodeid=nodeid,
            when=when,
            outcome=outcome,
            longrepr=longrepr,
            wasxfail=False,
            data=data,
        )
    assert summary_lines(recorder.gated(), MODES) == [
        "mode   passed   failed  skipped",
        "fp16        0        0        1",
        "int8        1        0        1",
        "-           0        1        0",
        "skip reasons:",
        "    2 x too old",
    ]

"""``--gpuinfer-requirements``: every collected test's hardware needs as JSON, for routing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes import nvml_specs

from pytest_gpuinfer.fleet.export import (
    EXPORT_SCHEMA,
    EXPORT_SCHEMA_VERSION,
    load_export,
    requirements_of_record,
)
from pytest_gpuinfer.probes.errors import InputError

pytest_plugins = ["pytester"]

InstallNvml = Callable[[dict[str, Any] | None], None]

SUITE = """
import pytest

@pytest.mark.gpuinfer(modes=["int8", "fp16"], free_memory="6GiB")
def test_quantized(inference_mode):
    pass

@pytest.mark.gpuinfer(gpus=2, compute_capability=">=8.0", total_memory="40GiB",
                      tensor_cores=["bf16"], packages={"bitsandbytes": ">=0.45"})
def test_split():
    pass

def test_model(load_model):
    pass

def test_plain():
    pass
"""


def _export(pytester: pytest.Pytester, *args: str) -> dict[str, Any]:
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_subprocess(
        "--collect-only", "-q", "--gpuinfer-requirements", "req.json", *args
    )
    assert result.ret == 0, result.stdout.str()
    return load_export(pytester.path / "req.json")


def test_collect_only_export(pytester: pytest.Pytester, fake_nvml: InstallNvml) -> None:
    fake_nvml(nvml_specs.NO_DRIVER)  # routing needs no GPU on the machine that collects
    data = _export(pytester)
    assert (data["schema"], data["schema_version"]) == (EXPORT_SCHEMA, EXPORT_SCHEMA_VERSION)
    assert data["summary"] == {
        "tests": 5,
        "gpu_tests": 4,
        "gpu_tests_without_memory_need": 1,  # test_model uses load_model, declares nothing
        "max_memory_need_bytes": 40 * 2**30,
    }
    tests = {t["nodeid"]: t for t in data["tests"]}
    assert list(tests) == [
        "test_suite.py::test_quantized[int8]",
        "test_suite.py::test_quantized[fp16]",
        "test_suite.py::test_split",
        "test_suite.py::test_model",
        "test_suite.py::test_plain",
    ]
    assert tests["test_suite.py::test_quantized[int8]"] == {
        "nodeid": "test_suite.py::test_quantized[int8]",
        "gpu_test": True,
        "mode": "int8",
        "modes": ["int8"],
        "gpus": None,
        "compute_capability": None,
        "free_memory_bytes": 6 * 2**30,
        "total_memory_bytes": None,
        "memory_need_bytes": 6 * 2**30,
        "tensor_cores": [],
        "packages": {},
        "marker": {"free_memory": "6GiB", "modes": ["int8", "fp16"]},
    }
    split = tests["test_suite.py::test_split"]
    assert (split["gpus"], split["compute_capability"], split["tensor_cores"]) == (
        2,
        ">=8.0",
        ["bf16"],
    )
    assert split["packages"] == {"bitsandbytes": ">=0.45"}
    assert tests["test_suite.py::test_plain"]["gpu_test"] is False
    # A router re-reads the marker to judge a runner with the plugin's own rules.
    assert requirements_of_record(split).gpus == 2


def test_modes_option_narrows_the_export(pytester: pytest.Pytester) -> None:
    data = _export(pytester, "--gpuinfer-modes", "fp16")
    assert data["modes_selected"] == ["fp16"]
    assert [t["mode"] for t in data["tests"] if t["mode"]] == ["fp16"]


def test_under_xdist_worker_gw0_writes_it(
    pytester: pytest.Pytester, fake_nvml: InstallNvml
) -> None:
    fake_nvml(nvml_specs.NO_DRIVER)
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_subprocess(
        "-n", "2", "-p", "no:randomly", "--gpuinfer-requirements", "req.json"
    )
    result.assert_outcomes(passed=2, skipped=3)
    data = load_export(pytester.path / "req.json")
    assert data["summary"]["tests"] == 5


def test_load_export_rejects_other_files(tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"schema": "x"}))
    with pytest.raises(InputError, match=r"is not a --gpuinfer-requirements export$"):
        load_export(other)
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({"schema": EXPORT_SCHEMA, "schema_version": "9"}))
    with pytest.raises(InputError, match=r"schema_version '9'; expected '1'"):
        load_export(newer)


def test_route_tests_to_runners_from_the_export(
    pytester: pytest.Pytester, fake_nvml: InstallNvml, capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_gpuinfer.cli.main import main as gpuinfer

    def route_main(argv: list[str]) -> int:
        return gpuinfer(["route", *argv])

    fake_nvml(nvml_specs.NO_DRIVER)
    _export(pytester)
    out = pytester.path / "subsets"
    capsys.readouterr()
    code = route_main(
        [str(pytester.path / "req.json"), "t4=t4", "a100=a100-80gb", "--out", str(out)]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {
        "include": [{"runner": "t4", "runs-on": "t4", "tests": 4}]
    }  # every test fits the cheaper T4 except test_split, which fits nowhere
    assert (out / "t4.txt").read_text().splitlines() == [
        "test_suite.py::test_quantized[int8]",
        "test_suite.py::test_quantized[fp16]",
        "test_suite.py::test_model",
        "test_suite.py::test_plain",
    ]
    assert (out / "a100.txt").read_text() == ""
    assert captured.err.startswith(
        "no runner for test_suite.py::test_split: t4: needs gpus=2; found 1 GPU; "
    )
    assert route_main([str(pytester.path / "req.json"), "t4", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        "gpuinfer: error: runner 't4' is not LABEL=PROFILE, LABEL=AUDIT.json or cpu\n"
    )


def test_the_old_module_entry_still_routes_with_a_deprecation_note(tmp_path: Path) -> None:
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, "-m", "pytest_gpuinfer.merge_route", str(tmp_path / "none.json"), "t4=t4"],
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 2
    assert completed.stderr.splitlines() == [
        "merge_route: deprecated: use `gpuinfer route` (same arguments)",
        f"gpuinfer: error: cannot read {tmp_path / 'none.json'}: No such file or directory",
    ]

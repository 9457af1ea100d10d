"""`gpuinfer` as a user runs it: exit codes, the table, JSON, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes import nvml_specs

from pytest_gpuinfer.cli.main import main
from pytest_gpuinfer.probes.report import SCHEMA_VERSION, Report
from pytest_gpuinfer.probes.software import probe_software

Install = Callable[[dict[str, Any] | None], None]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_audit_without_gpu_says_so_and_what_still_runs(
    fake_nvml: Install, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_nvml(nvml_specs.NO_DRIVER)
    code, out, _ = run(capsys, "audit", "--modes", "fp32,fastpath")
    assert code == 0
    assert "no GPU: NVML library not found" in out
    assert "bitsandbytes int8 (>= 0.46.0) still run on the CPU" in out
    assert "fastpath supported" in out
    report = Report.from_dict(json.loads(run(capsys, "audit", "--json")[1]))
    # int8 on a CPU depends on the stack (transformers 4.45-4.50 cannot); the table agrees.
    assert report.verdicts["int8"].device == "cpu"


def test_audit_on_fake_h100(fake_nvml: Install, capsys: pytest.CaptureFixture[str]) -> None:
    fake_nvml(nvml_specs.h100())
    code, out, _ = run(capsys, "audit", "--json")
    report = Report.from_dict(json.loads(out))
    assert report.gpus[0].name == "NVIDIA H100 80GB HBM3"
    assert report.gpus[0].compute_capability == (9, 0)
    assert report.driver.cuda_driver_version == "13.0"
    if probe_software().torch_cuda is None:
        # A CPU build of torch beside a real H100 is a real problem, and the audit says so.
        assert report.verdicts["fp16"].status.value == "unsupported"
        assert "torch-cuda-build" in {f.rule_id for f in report.verdicts["fp16"].findings}
        assert code == 1
    else:  # the GPU machine: a CUDA torch that drives the (fake) H100's 9.0
        assert report.verdicts["fp16"].status.value == "supported"


def test_json_round_trips_with_schema_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "audit", "--profile", "a100-80gb", "--json")
    data = json.loads(out)
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["profile"] == "a100-80gb"
    assert Report.from_dict(data).to_dict() == data
    assert code == 0


def test_profile_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "audit", "--profile", "a100-40gb", "--modes", "bf16,int8")[0] == 0
    code, out, _ = run(capsys, "audit", "--profile", "t4", "--modes", "bf16")
    assert code == 1
    assert "SIMULATED profile 't4'" in out
    assert "bf16 needs compute capability >= 8.0 (Ampere); found Tesla T4 (7.5)" in out
    # degraded passes unless --strict
    assert run(capsys, "audit", "--profile", "v100", "--modes", "int8")[0] == 0
    assert run(capsys, "audit", "--profile", "v100", "--modes", "int8", "--strict")[0] == 1


def test_profile_with_old_bitsandbytes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "audit",
        "--profile",
        "v100@bitsandbytes=0.36.0,transformers=4.29.2",
        "--modes",
        "int8",
    )
    assert code == 1
    assert "bitsandbytes 0.36.0 [profile]" in out
    assert "int8 with bitsandbytes < 0.37 needs compute capability >= 7.5" in out


def test_model_memory_fit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_gpuinfer.tiny_models import write_tiny_model

    model = write_tiny_model("gpt2", tmp_path / "gpt2")
    capsys.readouterr()  # what writing the model printed
    code, out, _ = run(capsys, "audit", "--profile", "t4", "--model", str(model), "--json")
    data = json.loads(out)
    fits = data["memory_fit"]["fits"]
    assert set(fits) == {"fp32", "fp16", "bf16", "int8", "nf4", "fastpath"}
    assert fits["fp16"]["status"] == "supported"
    modes = data["memory_fit"]["estimate"]["modes"]
    assert modes["fp16"]["total_bytes"] > modes["int8"]["total_bytes"] > modes["nf4"]["total_bytes"]
    assert code == 1  # bf16 on a T4


def test_profiles_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "profiles")
    assert code == 0
    assert "t4" in out and "Tesla T4" in out and "7.5" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["audit", "--modes", "int9"], "--modes: unknown mode 'int9'; expected one of: fp32"),
        (["audit", "--modes", ","], "--modes: no mode given in ','"),
        (["audit", "--profile", "z80"], "unknown profile 'z80'"),
        (["audit", "--model", "/nonexistent/model"], "'/nonexistent/model' does not exist"),
        (["audit", "--max-memory", "0=10G", "--model", "."], "'10G'"),
        (["audit", "--max-memory", "0=-1GiB", "--model", "."], "'-1GiB'"),
        (["audit", "--max-memory", "0=abc", "--model", "."], "'abc'"),
        (["audit", "--max-memory", "cuda:0=1GiB", "--model", "."], "'cuda:0'"),
        (["audit", "--max-memory", "0=1GiB"], "give --model PATH too"),
        (["audit", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_catching_exit(capsys, argv)
    assert code == 2
    assert message in err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err + out


def run_catching_exit(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_directory_without_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_catching_exit(capsys, ["audit", "--model", str(tmp_path)])
    assert code == 2
    assert str(tmp_path) in err and "config.json" in err


def test_unreadable_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config.json").write_text("{ this is not json")
    code, _, err = run_catching_exit(capsys, ["audit", "--model", str(tmp_path)])
    assert code == 2
    assert "not valid JSON" in err and "Traceback" not in err


def test_malformed_profile_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("name = ")
    code, _, err = run_catching_exit(capsys, ["audit", "--profile", str(bad)])
    assert code == 2
    assert f"profile file {bad}: not valid TOML" in err


def test_console_script_runs_in_a_fresh_process() -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_gpuinfer.cli",
            "audit",
            "--profile",
            "h100",
            "--modes",
            "int8",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "int8     supported" in completed.stdout


def test_compatibility_page_is_current() -> None:
    page = Path(__file__).parents[1] / "docs" / "compatibility.md"
    assert main(["matrix", "--output", str(page), "--check"]) == 0, (
        "docs/compatibility.md is stale: run `gpuinfer matrix --output docs/compatibility.md`"
    )

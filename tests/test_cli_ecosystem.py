"""`gpuinfer env`, `--version`, `python -m pytest_gpuinfer`, the audit's GPUINFER_* variables,
the allocator configuration, `--sweep` and `--profile-from-labels`, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes import nvml_specs

from pytest_gpuinfer import __version__, schemas
from pytest_gpuinfer.cli.audit_settings import AUDIT_ENVIRONMENT, FALSE_WORDS, TRUE_WORDS
from pytest_gpuinfer.cli.main import main
from pytest_gpuinfer.probes.alloc_conf import (
    EXPANDABLE_FRAGMENTATION_SCALE,
    allocator_config,
    parse_allocator_conf,
)
from pytest_gpuinfer.probes.report import SCHEMA, Report

Install = Callable[[dict[str, Any] | None], None]
jsonschema = pytest.importorskip("jsonschema", reason="the test extra installs jsonschema")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _valid(data: object, fmt: schemas.Format) -> None:
    fmt.check(data, "output")
    jsonschema.Draft202012Validator(fmt.json_schema()).validate(data)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pytest_gpuinfer.tiny_models import write_tiny_model

    return write_tiny_model("llama", tmp_path_factory.mktemp("eco") / "llama")


def test_env_block_reads_gpus_through_nvml(
    fake_nvml: Install, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = nvml_specs.h100()
    spec["gpus"][0]["clocks_event_reasons"] = 0x20  # sw thermal slowdown
    fake_nvml(spec)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    code, out, _ = run(capsys, "env")
    assert code == 0
    lines = out.splitlines()
    assert f"- `pytest-gpuinfer` version: {__version__}" in lines
    assert "- GPU 0: NVIDIA H100 80GB HBM3, cc 9.0, 79.60 GiB" in lines
    assert "  - degraded: GPU 0 clocks are held down by sw_thermal_slowdown" in lines
    assert "- NVIDIA driver: 580.65.06 (CUDA 13.0, NVML 13.580.65.06)" in lines
    assert "- CUDA_VISIBLE_DEVICES: 0" in lines
    assert "- PYTORCH_CUDA_ALLOC_CONF: expandable_segments:True" in lines
    assert "- PYTORCH_ALLOC_CONF: unset" in lines
    assert any(line.startswith("- PyTorch version (GPU build): ") for line in lines)
    code, out, _ = run(capsys, "env", "--json")
    facts = json.loads(out)
    _valid(facts, schemas.ENV)
    assert facts["allocator"]["expandable_segments"] is True
    assert facts["gpus"][0]["compute_capability"] == "9.0"


def test_env_without_a_driver(fake_nvml: Install, capsys: pytest.CaptureFixture[str]) -> None:
    fake_nvml(nvml_specs.NO_DRIVER)
    out = run(capsys, "env")[1]
    assert "- GPUs: none (NVML library not found (no NVIDIA driver installed?))" in out


def test_version_and_python_dash_m(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--version") == (0, f"gpuinfer (pytest-gpuinfer) {__version__}\n", "")
    completed = subprocess.run(
        [sys.executable, "-m", "pytest_gpuinfer", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (completed.returncode, completed.stdout) == (
        0,
        f"gpuinfer (pytest-gpuinfer) {__version__}\n",
    )


def test_allocator_variables_in_torchs_order() -> None:
    assert allocator_config({}).variable is None
    config = allocator_config({"PYTORCH_ALLOC_CONF": "expandable_segments:True"})
    assert (config.variable, config.fragmentation_scale) == (
        "PYTORCH_ALLOC_CONF",
        EXPANDABLE_FRAGMENTATION_SCALE,
    )
    both = allocator_config(
        {
            "PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:128",
            "PYTORCH_ALLOC_CONF": "expandable_segments:True",
        }
    )
    assert both.variable == "PYTORCH_CUDA_ALLOC_CONF"  # c10/cuda/CUDAAllocatorConfig.h
    assert both.fragmentation_scale == 1.0
    assert "differs from PYTORCH_CUDA_ALLOC_CONF" in both.problems[0]
    settings, problems = parse_allocator_conf(
        "roundup_power2_divisions:[256:1,>:2], expandable_segments:true,oops"
    )
    assert settings["roundup_power2_divisions"] == "[256:1,>:2]"
    assert problems == [
        "entry 'oops' is not KEY:VALUE; torch refuses it",
        "expandable_segments:true is neither True nor False (torch accepts only those two "
        "words); judged as not expandable",
    ]
    async_backend = allocator_config(
        {"PYTORCH_CUDA_ALLOC_CONF": "backend:cudaMallocAsync,expandable_segments:True"}
    )
    assert async_backend.fragmentation_scale == 1.0


def test_expandable_segments_lower_the_fit_and_say_why(
    model: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["audit", "--profile", "t4", "--model", str(model), "--modes", "fp16", "--json"]
    argv += ["--batch-size", "8", "--seq-len", "100", "--new-tokens", "16"]
    default = json.loads(run(capsys, *argv)[1])
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    expandable = json.loads(run(capsys, *argv)[1])
    before = default["memory_fit"]["fits"]["fp16"]["workload"]["parts"]
    after = expandable["memory_fit"]["fits"]["fp16"]["workload"]["parts"]
    assert after["allocator"] < before["allocator"]
    assert expandable["memory_fit"]["margins"]["fragmentation_scale"] == 0.5
    assert "unconfirmed on a GPU" in expandable["memory_fit"]["margins"]["fragmentation_source"]
    assert expandable["notes"] == [
        "allocator: PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True (fragmentation: "
        "expandable_segments:True: 0.5 x the default allowance, an assumption "
        "(probes.alloc_conf.EXPANDABLE_FRAGMENTATION_SCALE), unconfirmed on a GPU)"
    ]


def test_audit_reads_the_plugins_variables(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_gpuinfer.plugin.options import _FALSE, _TRUE, OPTIONS

    plugin = {spec.env for spec in OPTIONS}
    assert set(AUDIT_ENVIRONMENT.values()) <= plugin
    assert (TRUE_WORDS, FALSE_WORDS) == (_TRUE, _FALSE)
    monkeypatch.setenv("GPUINFER_PROFILE", "t4")
    monkeypatch.setenv("GPUINFER_MODES", "bf16")
    code, out, _ = run(capsys, "audit", "--json")
    report = json.loads(out)
    assert (report["profile"], list(report["verdicts"])) == ("t4", ["bf16"])
    assert code == 1  # bf16 on a T4
    # the command line wins over the variable
    code, out, _ = run(capsys, "audit", "--json", "--profile", "a100-80gb", "--modes", "fp16")
    assert json.loads(out)["profile"] == "a100-80gb"
    monkeypatch.setenv("GPUINFER_MODES", "fp16")
    monkeypatch.setenv("GPUINFER_STRICT", "maybe")
    assert run(capsys, "audit")[2] == (
        "gpuinfer: error: GPUINFER_STRICT='maybe' is not a boolean; expected one of "
        "1/0, true/false, yes/no, on/off\n"
    )
    monkeypatch.setenv("GPUINFER_STRICT", "0")
    monkeypatch.setenv("GPUINFER_MODES", "int9")
    assert run(capsys, "audit")[2].startswith("gpuinfer: error: GPUINFER_MODES: unknown mode")
    monkeypatch.setenv("GPUINFER_MODES", "fp16")
    monkeypatch.setenv("GPUINFER_PROFILE", "t5")
    assert run(capsys, "audit")[2].startswith(
        "gpuinfer: error: GPUINFER_PROFILE: unknown profile 't5'"
    )


def test_audit_json_is_stamped_and_checked(capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads(run(capsys, "audit", "--profile", "h100", "--json")[1])
    assert (data["schema"], data["schema_version"]) == (SCHEMA, "1")
    assert schemas.AUDIT.schema == SCHEMA
    jsonschema.Draft202012Validator(schemas.AUDIT.json_schema()).validate(data)
    legacy = {k: v for k, v in data.items() if k != "schema"}  # written before the stamp
    assert Report.from_dict(legacy).profile == "h100"
    with pytest.raises(ValueError, match="report schema 'pytest-gpuinfer/report' is not"):
        Report.from_dict({**data, "schema": "pytest-gpuinfer/report"})


def test_sweep_smallest_fit_first(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_gpuinfer.probes.profiles import BUILTIN_PROFILES

    argv = ["audit", "--model", str(model), "--sweep", "--modes", "bf16,int8"]
    code, out, _ = run(capsys, *argv)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"sweep: {model}, generate() on batch 1 x 512 + 64 new tokens")
    rows = [line.split()[0] for line in lines[4 : 4 + len(BUILTIN_PROFILES)]]
    assert sorted(rows) == sorted(BUILTIN_PROFILES)  # every registered profile, once
    assert rows[0] == "gtx1660"  # 6 GiB, int8 runs: the smallest that fits
    code, out, _ = run(capsys, *argv, "--json")
    data = json.loads(out)
    _valid(data, schemas.SWEEP)
    first = data["profiles"][0]
    assert first["fits"] is True
    int8 = next(m for m in first["modes"] if m["mode"] == "int8")
    ceiling = int8["decode_ceiling"]
    assert ceiling["tokens_per_s"] == pytest.approx(
        192e9 / (ceiling["weights_bytes"] + ceiling["kv_cache_bytes"]), rel=1e-3
    )
    assert data["profiles"][-1]["fits"] is False or all(p["fits"] for p in data["profiles"])
    assert run(capsys, "audit", "--sweep")[2] == (
        "gpuinfer: error: --sweep judges a model on every profile: give --model PATH too\n"
    )


LABELS = {
    "kubernetes.io/hostname": "gpu-node-1",
    "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
    "nvidia.com/gpu.compute.major": "8",
    "nvidia.com/gpu.compute.minor": "0",
    "nvidia.com/gpu.memory": "81920",
    "nvidia.com/gpu.count": "4",
}
NODE = {"metadata": {"name": "gpu-node-1", "labels": LABELS}}


def test_profile_from_node_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node = tmp_path / "node.json"
    node.write_text(json.dumps(NODE), encoding="utf-8")
    code, out, _ = run(capsys, "audit", "--profile-from-labels", str(node), "--json")
    report = json.loads(out)
    assert code == 0
    assert report["profile"] == "labels:NVIDIA-A100-SXM4-80GB"
    assert len(report["gpus"]) == 4
    assert report["gpus"][0]["name"] == "NVIDIA A100-SXM4-80GB"
    assert report["gpus"][0]["total_memory_bytes"] == 81920 * 2**20
    lines = tmp_path / "labels.txt"
    lines.write_text("\n".join(f"{k}={v}" for k, v in LABELS.items()), encoding="utf-8")
    assert (
        json.loads(run(capsys, "audit", "--profile-from-labels", str(lines), "--json")[1])["gpus"][
            0
        ]["compute_capability"]
        == "8.0"
    )
    lines.write_text("nvidia.com/gpu.product=NVIDIA-A100-SXM4-80GB\n", encoding="utf-8")
    assert run(capsys, "audit", "--profile-from-labels", str(lines))[2].startswith(
        f"gpuinfer: error: labels {lines}: missing nvidia.com/gpu.compute.major, "
    )
    lines.write_text("just words\n", encoding="utf-8")
    assert (
        "line 1: 'just words' is not key=value"
        in run(capsys, "audit", "--profile-from-labels", str(lines))[2]
    )
    assert run(capsys, "audit", "--profile", "t4", "--profile-from-labels", str(node))[2] == (
        "gpuinfer: error: --profile and --profile-from-labels both describe the GPU: "
        "give one of them\n"
    )
    assert (
        "--profile is given 2 times"
        in run(capsys, "audit", "--profile", "t4", "--profile", "l4")[2]
    )

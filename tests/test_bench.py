"""gpuinfer bench without a model: statistics, the record, NVML readings, bad input."""

from __future__ import annotations

import json
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes import nvml_specs

from pytest_gpuinfer.bench.config import BenchConfig, ordered_modes, parse_counts
from pytest_gpuinfer.bench.hardware import (
    GpuWatch,
    device_handle,
    energy_millijoules,
    memory_bandwidth,
    nvml_session,
)
from pytest_gpuinfer.bench.measure import Footprint, Repetition, WorkloadRun
from pytest_gpuinfer.bench.record import FIGURES, ModeResult, add_ratios, build_result
from pytest_gpuinfer.bench.stats import Latency, Spread, percentile
from pytest_gpuinfer.cli.main import main as cli_main
from pytest_gpuinfer.probes.errors import InputError
from pytest_gpuinfer.probes.memory_workload import Workload
from pytest_gpuinfer.probes.model_shape import model_shape
from pytest_gpuinfer.tiny_models import trained_model_path

Install = Callable[[dict[str, Any] | None], None]
MODEL = str(trained_model_path())


# -- statistics ---------------------------------------------------------------------------


def test_percentile_interpolates_like_numpy() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 50) == 2.5
    assert percentile(values, 90) == pytest.approx(3.7)
    assert percentile([7.0], 99) == 7.0


def test_latency_has_optimum_benchmarks_fields() -> None:
    latency = Latency.from_values([1.0, 2.0, 3.0])
    assert latency.to_dict().keys() == {
        "unit", "values", "count", "total", "mean", "p50", "p90", "p95", "p99", "stdev", "stdev_"
    }  # fmt: skip
    assert (latency.count, latency.total, latency.mean, latency.p50) == (3, 6.0, 2.0, 2.0)
    assert latency.stdev == pytest.approx(statistics.pstdev([1.0, 2.0, 3.0]))
    assert latency.stdev_ == pytest.approx(latency.stdev / 2.0 * 100)


def test_spread_flags_a_wide_run_and_passes_a_steady_one() -> None:
    steady = Spread.of([10.0, 10.1, 9.9, 10.0, 10.05])
    noisy = Spread.of([10.0, 14.0, 7.0, 12.0, 9.0])
    assert not steady.too_wide(0.03)
    assert noisy.too_wide(0.03)
    assert steady.median == 10.0
    assert noisy.cv > 0.2


# -- the record ---------------------------------------------------------------------------


def _run(decode_per_token: list[float], *, workload: Workload | None = None) -> WorkloadRun:
    w = workload or Workload(batch_size=2, seq_len=100, new_tokens=11)
    reps = [
        Repetition(prefill_s=0.02, decode_s=d * 10, generate_s=0.02 + d * 10, per_token_s=[d] * 10)
        for d in decode_per_token
    ]
    return WorkloadRun(
        workload=w,
        device="cuda:0",
        repetitions=reps,
        seconds=1.0,
        max_allocated_bytes=3 * 10**9,
        max_reserved_bytes=4 * 10**9,
        energy_mj=len(reps) * 2 * 11 * 500.0,
    )


LLAMA = {
    "model_type": "llama", "hidden_size": 2048, "num_hidden_layers": 22,
    "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 64,
    "intermediate_size": 5632, "vocab_size": 32000, "max_position_embeddings": 2048,
}  # fmt: skip
# The audit's shape reader (probes.model_shape), the one the memory estimate uses.
SHAPE = Footprint(weights_bytes=2 * 10**9, shape=model_shape(LLAMA, "test"), kv_dtype_bytes=2)


def test_floor_and_mbu_follow_weights_kv_and_bandwidth() -> None:
    result = build_result(
        "fp16", _run([0.010] * 5), None, SHAPE,
        bandwidth_bytes_per_s=2e12, bandwidth_reason=None, max_spread=0.05,
    )  # fmt: skip
    kv = 2 * 22 * 4 * 64 * 2 * (100 + 11 / 2) * 2
    assert result.floor_seconds_per_token == pytest.approx((2e9 + kv) / 2e12)
    assert result.decode_seconds_per_token == pytest.approx(0.010)
    assert result.decode_tokens_per_second == pytest.approx(200.0)
    assert result.floor_seconds_per_token is not None
    assert result.mbu == pytest.approx(result.floor_seconds_per_token / 0.010)
    assert result.energy_joules_per_token == pytest.approx(0.5)
    assert not result.spread_too_wide


def test_without_bandwidth_the_floor_is_none_with_the_reason() -> None:
    result = build_result(
        "fp32", _run([0.01, 0.02, 0.03]), None, SHAPE,
        bandwidth_bytes_per_s=None, bandwidth_reason="peak memory bandwidth unknown (no GPU)",
        max_spread=0.05,
    )  # fmt: skip
    assert result.floor_seconds_per_token is None and result.mbu is None
    assert any("no GPU" in note for note in result.notes)
    assert result.spread_too_wide


def test_ratios_divide_by_the_reference_at_the_same_workload() -> None:
    def make(mode: str, per_token: float) -> ModeResult:
        return build_result(
            mode, _run([per_token] * 4), None, SHAPE,
            bandwidth_bytes_per_s=2e12, bandwidth_reason=None, max_spread=0.05,
        )  # fmt: skip

    results = [make("fp16", 0.010), make("int8", 0.030)]
    add_ratios(results, "fp16")
    fp16, int8 = results
    assert fp16.reference and fp16.ratio("decode_seconds_per_token") == pytest.approx(1.0)
    assert int8.ratio("decode_tokens_per_second") == pytest.approx(1 / 3)
    assert int8.ratio("decode_seconds_per_token") == pytest.approx(3.0)
    assert set(int8.ratios) == set(FIGURES)
    with pytest.raises(KeyError, match="unknown figure"):
        int8.ratio("speed")


def test_json_report_keeps_optimum_benchmarks_layout() -> None:
    result = build_result(
        "fp16", _run([0.010] * 3), None, SHAPE,
        bandwidth_bytes_per_s=2e12, bandwidth_reason=None, max_spread=0.05,
    )  # fmt: skip
    report = result.to_dict()["report"]
    assert set(report) == {"load_model", "prefill", "decode", "per_token", "generate"}
    decode = report["decode"]
    assert decode["latency"]["count"] == 3
    assert decode["throughput"] == {"unit": "tokens/s", "value": pytest.approx(2 * 10 / 0.1)}
    assert decode["memory"]["max_reserved"] == 4000.0 and decode["memory"]["unit"] == "MB"
    assert decode["energy"]["unit"] == "kWh" and decode["efficiency"]["unit"] == "tokens/kWh"
    assert report["per_token"]["latency"]["count"] == 30
    json.dumps(result.to_dict())


# -- NVML ---------------------------------------------------------------------------------


def test_bandwidth_from_nvml_clock_and_bus_width(fake_nvml: Install) -> None:
    fake_nvml(nvml_specs.h100())
    with nvml_session() as (nvml, why):
        assert why is None and nvml is not None
        handle, _ = device_handle(nvml, 0)
        reading = memory_bandwidth(nvml, handle)
        first = energy_millijoules(nvml, handle)
        second = energy_millijoules(nvml, handle)
    assert reading.value == pytest.approx(3.352e12, rel=1e-3)
    assert reading.source is not None and "5120-bit" in reading.source
    assert first.value is not None and second.value is not None
    assert second.value - first.value == 5000


def test_without_nvml_clocks_the_profile_figure_is_used(fake_nvml: Install) -> None:
    spec = nvml_specs.h100()
    spec["gpus"][0]["fail"] = {"clock": "NotSupported", "energy": "NotSupported"}
    fake_nvml(spec)
    with nvml_session() as (nvml, _):
        assert nvml is not None
        handle, _ = device_handle(nvml, 0)
        reading = memory_bandwidth(nvml, handle, profile_gb_per_s=3350)
        energy = energy_millijoules(nvml, handle)
        unknown = memory_bandwidth(nvml, handle)
    assert reading.value == 3.35e12 and reading.source is not None
    assert energy.value is None and "no energy counter" in (energy.reason or "")
    assert unknown.value is None and "Not Supported" in (unknown.reason or "")


def test_no_driver_means_no_bandwidth_and_no_energy(fake_nvml: Install) -> None:
    fake_nvml(None)
    with nvml_session() as (nvml, why):
        assert nvml is None and why is not None
        assert memory_bandwidth(nvml, None).value is None
        assert energy_millijoules(nvml, None).value is None


def _child_starts(pid: int, used: int) -> None:
    """The fake GPU now lists our child, as NVML does once its CUDA context exists."""
    spec = sys.modules["pynvml"]._state["spec"]
    spec["gpus"][0].setdefault("processes", []).append({"pid": pid, "used": used})


def test_foreign_processes_on_the_gpu_are_recorded(fake_nvml: Install) -> None:
    spec = nvml_specs.h100()
    spec["gpus"][0]["processes"] = [{"pid": 424242, "used": 5 * 2**30}]
    fake_nvml(spec)
    with nvml_session() as (nvml, _):
        handle, _ = device_handle(nvml, 0)  # type: ignore[arg-type]
        watch = GpuWatch(nvml, handle)
        watch.start()
        _child_starts(os.getpid() + 1, 2**30)
        process, device = watch.sample([os.getpid() + 1])
    assert process == 2**30
    assert device is not None
    assert list(watch.foreign) == [424242]
    assert watch.foreign[424242].used_bytes == 5 * 2**30


def test_a_quiet_gpu_has_no_foreigners(fake_nvml: Install) -> None:
    fake_nvml(nvml_specs.h100())
    with nvml_session() as (nvml, _):
        handle, _ = device_handle(nvml, 0)  # type: ignore[arg-type]
        watch = GpuWatch(nvml, handle)
        watch.start()
        _child_starts(os.getpid() + 1, 2**30)
        process, _ = watch.sample([os.getpid() + 1])
    assert process == 2**30
    assert watch.foreign == {}


def test_a_child_under_another_pid_namespace_is_not_called_foreign(fake_nvml: Install) -> None:
    fake_nvml(nvml_specs.h100())
    with nvml_session() as (nvml, _):
        handle, _ = device_handle(nvml, 0)  # type: ignore[arg-type]
        watch = GpuWatch(nvml, handle)
        watch.start()
        _child_starts(987654, 2**30)  # NVML's host PID, not the one we know
        process, _ = watch.sample([os.getpid() + 1])
    assert process is None
    assert watch.foreign == {}
    assert watch.note is not None and "PID namespace" in watch.note


# -- bad input: exit 2, one line, before anything is measured ------------------------------


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--prompt-len", "0", "prompt length 0: expected an integer >= 1"),
        ("--prompt-len", "-5", "prompt length -5: expected an integer >= 1"),
        ("--new-tokens", "0", "new tokens 0: expected an integer >= 2"),
        ("--new-tokens", "1", "new tokens 1: expected an integer >= 2 (decode needs a 2nd token)"),
        ("--batch-size", "0", "batch size 0: expected an integer >= 1"),
        ("--batch-size", "1,-8", "batch size -8: expected an integer >= 1"),
        ("--batch-size", "two", "batch size 'two': expected an integer >= 1"),
        ("--min-repetitions", "1", "repetitions 1: expected an integer >= 2"),
        ("--modes", "int4", "unknown mode in --modes 'int4'"),
    ],
)
def test_bad_lengths_and_counts_exit_2(
    option: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli_main(["bench", "--model", MODEL, f"{option}={value}"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.count("\n") == 1 and message in captured.err
    assert "starting" not in captured.err


def test_unwritable_chart_path_exits_2_before_measuring(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    # root writes into a read-only folder; sysfs is read-only for everyone.
    target = locked / "c.png" if os.geteuid() != 0 else Path("/sys/gpuinfer-bench-chart.png")
    try:
        code = cli_main(["bench", "--model", MODEL, "--chart", str(target)])
    finally:
        locked.chmod(0o700)
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.startswith(f"gpuinfer: error: --chart {str(target)!r} is not writable (")
    assert captured.err.count("\n") == 1 and "starting" not in captured.err


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("missing-folder/c.png", "folder 'missing-folder' does not exist"),
        (".", "is a directory: expected a file path"),
        ("chart.jpg", "expected a file name ending in .png"),
    ],
)
def test_bad_chart_paths_exit_2(
    path: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    assert cli_main(["bench", "--model", MODEL, "--chart", path]) == 2
    assert message in capsys.readouterr().err


def test_chart_without_matplotlib_exits_2_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert cli_main(["bench", "--model", MODEL, "--chart", "c.png"]) == 2
    assert "pytest-gpuinfer[chart]" in capsys.readouterr().err


def test_missing_model_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["bench", "--model", "./no-such-model"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_config_helpers() -> None:
    assert parse_counts("1, 8", "batch size") == (1, 8)
    with pytest.raises(InputError, match="batch size 1 is given twice in '1, 8,1'"):
        parse_counts("1, 8,1", "batch size")
    assert ordered_modes(["int8", "fp16"], "fp32") == ("fp32", "int8", "fp16")
    with pytest.raises(InputError, match="reference mode"):
        BenchConfig(model=MODEL, reference="fp8")
    config = BenchConfig(model=MODEL, batch_sizes=(1, 8))
    assert BenchConfig.from_dict(config.to_dict()) == config

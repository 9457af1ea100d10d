"""`gpuinfer audit --model` with a workload: the table, JSON, budgets and bad input."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes import nvml_specs

from pytest_gpuinfer.cli.main import main

Install = Callable[[dict[str, Any] | None], None]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pytest_gpuinfer.tiny_models import write_tiny_model

    return write_tiny_model("llama", tmp_path_factory.mktemp("cli") / "llama")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_workload_table_and_json(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["audit", "--profile", "h100", "--model", str(model), "--modes", "fp16,int8"]
    argv += ["--batch-size", "8", "--seq-len", "64", "--new-tokens", "16"]
    code, out, _ = run(capsys, *argv)
    assert code == 0
    assert "workload: generate() on batch 8 x 64 prompt tokens + 16 new tokens" in out
    assert "read from safetensors headers" in out
    assert (
        "supported: one GPU (GPU 0); longest seq at batch 8: 112, largest batch at seq 64:" in out
    )
    code, out, _ = run(capsys, *argv, "--json")
    data = json.loads(out)["memory_fit"]
    assert data["workload"] == {"batch_size": 8, "seq_len": 64, "new_tokens": 16}
    assert data["judged"] is True
    fp16 = data["fits"]["fp16"]
    assert fp16["status"] == "supported"
    assert fp16["workload"]["peak_bytes"] == sum(fp16["workload"]["parts"].values())
    assert fp16["max_seq_len"] == 128 - 16  # the tiny model's positions, new tokens included
    assert fp16["per_gpu"][0]["fits"] is True


def test_a_mode_that_cannot_run_is_never_called_supported_for_fitting(
    model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["audit", "--profile", "t4", "--model", str(model), "--modes", "fp16,bf16"]
    code, out, _ = run(capsys, *argv, "--seq-len", "32", "--new-tokens", "8")
    assert code == 1  # bf16 is unsupported on a T4 (cc 7.5), though it fits
    fit_part = out[out.index("memory fit for") :]
    assert "supported: one GPU (GPU 0)" in fit_part  # fp16: runs and fits
    bf16 = fit_part[fit_part.index("\nbf16") :]
    assert "supported: one GPU" not in bf16.replace("\n" + " " * 9, " ")
    assert "but bf16 cannot run here: its verdict above is unsupported" in bf16.replace(
        "\n" + " " * 9, " "
    )
    code, out, _ = run(capsys, *argv, "--seq-len", "32", "--new-tokens", "8", "--json")
    fits = json.loads(out)["memory_fit"]["fits"]
    assert fits["bf16"]["status"] == "supported"  # the memory fit alone
    assert fits["bf16"]["mode_verdict"] == "unsupported"
    assert fits["fp16"]["mode_verdict"] == "supported"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--batch-size", "0"], "gpuinfer: error: --batch-size 0 is not valid: expected a whole"),
        (["--seq-len", "-5"], "--seq-len -5 is not valid: expected a whole number >= 1"),
        (["--new-tokens", "-1"], "--new-tokens -1 is not valid: expected a whole number >= 1"),
        (["--max-memory", "7=1GiB"], "budget to GPU 7, but the judged machine has GPU 0"),
        (["--max-memory", '{"0": 1GiB}'], "--max-memory '{\"0\": 1GiB}' is not valid JSON"),
        (["--max-memory", "[1]"], "is not understood"),
    ],
)
def test_bad_workload_and_budget_are_exit_2(
    model: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    code, out, err = run(capsys, "audit", "--profile", "t4", "--model", str(model), *extra)
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and out == ""


def test_non_integer_batch_is_an_argparse_error(
    model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # argparse's own error, as one line and exit 2 (main returns the code).
    assert main(["audit", "--model", str(model), "--batch-size", "x"]) == 2
    assert "argument --batch-size: invalid int value: 'x'" in capsys.readouterr().err


def test_workload_without_a_model_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "audit", "--seq-len", "100")
    assert code == 2
    assert "--seq-len describe a workload for a model: give --model PATH too" in err


def test_max_memory_is_honoured_by_the_fit(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["audit", "--profile", "h100", "--model", str(model), "--modes", "fp16"]
    code, out, _ = run(capsys, *base, "--max-memory", "0=1KiB", "--json")
    fp16 = json.loads(out)["memory_fit"]["fits"]["fp16"]
    assert (fp16["status"], fp16["placement"]) == ("unsupported", "none")
    assert "a budget of 1.00 KiB" in fp16["reason"]
    assert code == 1
    # The JSON form, with a cpu budget: offloaded, runs slowly.
    code, out, _ = run(capsys, *base, "--max-memory", '{"0": "1KiB", "cpu": "8GiB"}')
    assert "degraded: with cpu/disk offload" in out
    assert code == 0


def test_no_gpu_says_what_it_judged(
    model: Path, fake_nvml: Install, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_nvml(nvml_specs.NO_DRIVER)
    code, out, _ = run(capsys, "audit", "--model", str(model), "--modes", "fp32")
    assert "no GPU here: these are predictions only" in out
    assert code == 0  # the fit is information only without a GPU
    code, out, _ = run(capsys, "audit", "--model", str(model), "--modes", "fp32", "--json")
    assert json.loads(out)["memory_fit"]["judged"] is False


def test_length_beyond_positions_warns(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "audit", "--profile", "h100", "--model", str(model), "--seq-len", "4096"
    )
    assert "warning: seq_len + new_tokens = 4160 is beyond the model's 128 positions" in out
    assert code == 0


def test_corrupt_checkpoint_is_one_line(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    broken = Path(shutil.copytree(model, tmp_path / "broken"))
    (broken / "model.safetensors").write_bytes(b"\xff" * 4)
    code, _, err = run(capsys, "audit", "--profile", "t4", "--model", str(broken))
    assert code == 2
    assert err == (
        f"gpuinfer: error: safetensors file '{broken / 'model.safetensors'}' is truncated: "
        "4 bytes, expected an 8-byte header length and a JSON header\n"
    )

"""gpuinfer bench end to end on the tiny trained LM: spawned children, failures, Ctrl-C.

Slow-ish (each mode is a fresh interpreter importing torch): one run covers the happy
path and two failures at once, one the stdout record, Markdown and a doctored baseline;
the Ctrl-C test runs a third. Faults reach the children through tests/fakes/bench_faults
(a ``sitecustomize`` on PYTHONPATH), not through the product.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_gpuinfer.bench.record import SCHEMA, SCHEMA_VERSION
from pytest_gpuinfer.cli.bench import JSON_FILE_DEPRECATED
from pytest_gpuinfer.tiny_models import trained_model_path

ROOT = Path(__file__).resolve().parents[1]
FAULTS_DIR = Path(__file__).parent / "fakes" / "bench_faults"
ENV_VAR = "GPUINFER_BENCH_FAULTS"
MODEL = str(trained_model_path())
QUICK = ["--prompt-len", "8", "--new-tokens", "4", "--warmup", "1", "--min-repetitions", "3"]
QUICK += ["--min-seconds", "0", "--no-pin", "--reference", "fp32"]
# bf16: warm-up (4 forwards) and two repetitions pass, the third runs out of memory.
FAULTS = {"oom_after_forwards": {"bf16": 12}, "load_error": {"int8": "bitsandbytes: no kernel"}}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPUINFER", "PYTEST_XDIST"))}
    paths = [str(FAULTS_DIR)] if ENV_VAR in extra else []
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [*paths, str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest_gpuinfer.cli", "bench", "--model", MODEL, *args]


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """fp32 measured, bf16 out of memory mid-run, int8 failing to load: one run."""
    out = tmp_path_factory.mktemp("bench")
    args = [*QUICK, "--modes", "fp32,bf16,int8", "--json", str(out / "bench.json")]
    chart = out / "bench.png"
    try:
        import matplotlib  # noqa: F401

        args += ["--chart", str(chart)]
    except ImportError:
        pass
    done = subprocess.run(
        _command(*args),
        env=_env(**{ENV_VAR: json.dumps(FAULTS)}),
        capture_output=True,
        text=True,
        timeout=600,
    )
    data = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    results = {r["mode"]: r for r in data["results"]}
    return {"done": done, "data": data, "results": results, "chart": chart}


def test_a_mode_that_fails_to_load_is_reported_and_the_others_measured(
    faulty_run: dict[str, Any],
) -> None:
    done, results = faulty_run["done"], faulty_run["results"]
    assert done.returncode == 1, done.stderr
    assert results["fp32"]["status"] == "measured"
    assert results["int8"]["status"] == "failed"
    assert results["int8"]["reason"] == "load failed: RuntimeError: bitsandbytes: no kernel"
    assert "int8: failed: load failed: RuntimeError: bitsandbytes: no kernel" in done.stdout


def test_out_of_memory_mid_run_keeps_the_figures_and_the_run_goes_on(
    faulty_run: dict[str, Any],
) -> None:
    done, results = faulty_run["done"], faulty_run["results"]
    bf16 = results["bf16"]
    assert bf16["status"] == "oom"
    assert bf16["reason"].startswith("out of memory after 2 repetition(s): CUDA out of memory.")
    assert bf16["repetitions"] == 2
    assert bf16["figures"]["decode_seconds_per_token"] > 0
    assert bf16["ratios"]["weights_bytes"] == pytest.approx(0.5, rel=0.05)
    assert "bf16: oom: out of memory after 2 repetition(s)" in done.stdout
    # The mode after it was still attempted.
    assert results["int8"]["status"] == "failed"


def test_the_reference_is_measured_first_with_every_figure(faulty_run: dict[str, Any]) -> None:
    data, fp32 = faulty_run["data"], faulty_run["results"]["fp32"]
    assert data["schema"] == SCHEMA and data["schema_version"] == SCHEMA_VERSION
    assert data["run"]["reference_mode"] == "fp32"
    assert [r["mode"] for r in data["results"]] == ["fp32", "bf16", "int8"]
    assert fp32["reference"] is True and fp32["repetitions"] >= 3
    figures = fp32["figures"]
    for name in ("load_seconds", "weights_bytes", "prefill_seconds", "end_to_end_seconds"):
        assert figures[name] > 0, name
    assert figures["decode_tokens_per_second"] == pytest.approx(
        1 / figures["decode_seconds_per_token"]
    )
    assert fp32["ratios"]["decode_seconds_per_token"] == pytest.approx(1.0)
    assert fp32["report"]["decode"]["latency"]["count"] == fp32["repetitions"]
    assert fp32["report"]["per_token"]["latency"]["count"] == 3 * fp32["repetitions"]
    assert fp32["spread"]["count"] == fp32["repetitions"]
    # Each mode ran in a process of its own, none of them this one or its parent.
    pids = {r["process_id"] for r in data["results"]}
    assert len(pids) == 3 and os.getpid() not in pids


def test_table_and_progress(faulty_run: dict[str, Any]) -> None:
    done = faulty_run["done"]
    assert "ratio to fp32 (the reference, measured in the same rounds;" in done.stdout
    assert "[1/3] fp32: starting a fresh process" in done.stderr
    assert "[2/3] bf16: loaded in" in done.stderr
    assert "b1 round 1: fp32 " in done.stderr and "[ETA " in done.stderr
    assert max(len(line) for line in done.stdout.splitlines()) <= 120


def test_json_file_is_the_deprecated_spelling_of_output(faulty_run: dict[str, Any]) -> None:
    done = faulty_run["done"]
    assert JSON_FILE_DEPRECATED in done.stderr
    assert done.stdout.startswith("gpuinfer bench\n")  # the table, not the record


def test_modes_are_measured_in_interleaved_rounds(faulty_run: dict[str, Any]) -> None:
    fp32, bf16 = faulty_run["results"]["fp32"], faulty_run["results"]["bf16"]
    assert faulty_run["data"]["run"]["interleaved"] is True
    # Both alive at once, asked in turn: bf16's rounds 0 and 1 pair with fp32's.
    assert fp32["process_id"] != bf16["process_id"]
    assert faulty_run["data"]["run"]["rounds"][0] >= 3
    interval = bf16["intervals"]["decode_seconds_per_token"]
    assert interval["rounds"] == 2 and interval["low"] <= interval["ratio"] <= interval["high"]
    assert bf16["resolution"]["dtype"] == "torch.bfloat16"


def test_chart_is_a_png(faulty_run: dict[str, Any]) -> None:
    pytest.importorskip("matplotlib")
    assert faulty_run["chart"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ctrl_c_keeps_partial_results_and_ends_the_child(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = [*QUICK, "--modes", "fp32,bf16", "--min-seconds", "300", "--output", str(out)]
    process = subprocess.Popen(
        _command(*args), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 300
    seen = []
    for line in process.stderr:
        seen.append(line)
        if "repetition 1" in line or time.monotonic() > deadline:
            break
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, "".join(seen) + stderr
    assert "interrupted: child processes ended, partial results kept" in stderr
    assert "INTERRUPTED: partial results (Ctrl-C)" in stdout
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["run"]["interrupted"] is True
    fp32, bf16 = data["results"]
    assert fp32["status"] == "interrupted" and fp32["repetitions"] >= 1
    assert fp32["figures"]["decode_seconds_per_token"] > 0
    # Interleaved: bf16 was alive and measuring too, and ended with it.
    assert bf16["status"] == "interrupted" and "interrupted" in bf16["reason"]
    for record in (fp32, bf16):
        with pytest.raises(ProcessLookupError):
            os.kill(record["process_id"], 0)


def test_json_on_stdout_markdown_and_a_doctored_baseline_fails(
    faulty_run: dict[str, Any], tmp_path: Path
) -> None:
    baseline = json.loads(json.dumps(faulty_run["data"]))
    for row in baseline["results"]:
        if row["mode"] == "fp32":
            # A baseline 100x faster than this run: a regression whatever the machine's noise
            # (on an H200 shared with 8 xdist workers, one fp32 run took 2x the next).
            row["figures"]["decode_seconds_per_token"] /= 100
    doctored = tmp_path / "baseline.json"
    doctored.write_text(json.dumps(baseline), encoding="utf-8")
    summary = tmp_path / "summary.md"
    args = [*QUICK, "--modes", "fp32", "--json", "--markdown", str(summary)]
    done = subprocess.run(
        _command(
            *args, "--baseline", str(doctored), "--compare-figures", "decode_seconds_per_token"
        ),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1, done.stderr
    record = json.loads(done.stdout)  # stdout holds the record alone
    assert record["schema"] == SCHEMA
    assert record["baseline"]["regressions"][0].startswith("fp32 b1 decode_seconds_per_token")
    assert "1 regression(s)" in done.stderr and "REGRESSION" in done.stderr
    assert "gpuinfer bench\n" in done.stderr  # the table went to stderr
    markdown = summary.read_text(encoding="utf-8")
    assert markdown.startswith("## gpuinfer bench\n")
    assert "| fp32 (ref) | 1 | measured |" in markdown
    assert "### against the baseline" in markdown


def test_compiled_measures_a_static_cache_and_says_whether_it_compiled(
    tmp_path: Path,
) -> None:
    out = tmp_path / "bench.json"
    args = [*QUICK, "--modes", "fp32", "--compiled", "--output", str(out)]
    done = subprocess.run(_command(*args), env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    (fp32,) = json.loads(out.read_text(encoding="utf-8"))["results"]
    assert fp32["status"] == "measured"
    compiled = fp32["compile"]
    assert compiled["first_call_seconds"] > 0 and compiled["compile_seconds"] >= 0
    if not str(fp32["device"]).startswith("cuda"):
        # transformers compiles on an accelerator only: the static cache alone, said so
        assert compiled["decode_step_compiled"] is False
        assert compiled["reason"].startswith("transformers compiles generate() on an accelerator")
        assert "--compiled: transformers compiles generate()" in done.stdout
    else:  # on a GPU the decode step compiles (fp32 has no quantizer in the way)
        assert compiled["decode_step_compiled"] is True, compiled

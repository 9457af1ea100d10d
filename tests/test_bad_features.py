"""The bad-input table of the newer features: bench (CLI and fixture), workloads, sizes
read from configs and profiles, ``load_model``'s keywords, the plugin's text options and
``assert_generation_close``'s generate keywords.

Each row: its exit code or exception, one line naming the value, no traceback.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from bad_rows import COLLECTION_ERROR, USAGE_ERROR, Row, one_line, params, run_cli, run_plugin
from bad_rows import suite as suite_file

from pytest_gpuinfer.probes.errors import InputError

MODEL = "@model"
LLAMA = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1000,
    "max_position_embeddings": 256,
}


def cli(id: str, *args: str, needle: str, **extra: Any) -> Row:
    return Row(id, "cli", args, needle, **extra)


def bench(id: str, *args: str, needle: str) -> Row:
    return Row(id, "cli", ("bench", "--model", MODEL, *args), needle)


def config(id: str, needle: str, **sizes: Any) -> Row:
    files = {"m/config.json": json.dumps({**LLAMA, **sizes})}
    return Row(id, "cli", ("audit", "--model", "m"), needle, files=files, timeout=30)


def profile(id: str, memory: object, needle: str) -> Row:
    files = {"p.json": json.dumps({"base": "t4", "memory": memory})}
    return Row(id, "cli", ("audit", "--profile", "p.json"), needle, files=files)


def plugin(id: str, *args: str, needle: str, **extra: Any) -> Row:
    return Row(id, "plugin", args, needle, USAGE_ERROR, **extra)


def mark(id: str, text: str, needle: str) -> Row:
    source = f"import pytest\n\n@pytest.mark.gpuinfer({text})\ndef test_marked():\n    pass\n"
    return Row(id, "mark", ("--gpuinfer",), needle, COLLECTION_ERROR, {"test_m.py": source})


def fixture(id: str, call: str, needle: str) -> Row:
    """A suite whose one test calls the gpuinfer_bench / load_model fixture badly."""
    body = (
        "def test_bad(load_model, gpuinfer_bench):\n"
        '    loaded = load_model(MODEL, "fp32", device_map="cpu")\n'
        f"    {call}\n"
    )
    return Row(id, "suite", ("--gpuinfer",), needle, 1, suite_file(body))


def loader(id: str, *args: Any, needle: str, **kwargs: Any) -> Row:
    return Row(id, "load_model", args, needle, kwargs=kwargs)


def generation(id: str, needle: str, **generate_kwargs: Any) -> Row:
    return Row(id, "assertion", (), needle, kwargs={"generate_kwargs": generate_kwargs})


TABLE: list[Row] = [
    # --- bench CLI ---------------------------------------------------------------------------
    bench("bench-min-seconds-inf", "--min-seconds", "inf", needle="'inf': expected a finite"),
    bench("bench-min-seconds-nan", "--min-seconds", "nan", needle="'nan': expected a finite"),
    bench("bench-min-seconds-a-year", "--min-seconds", "31536000",
          needle="minimum seconds 31536000.0: expected a number from 0 to 86400"),
    bench("bench-max-spread-nan", "--max-spread", "nan", needle="max spread 'nan'"),
    bench("bench-max-spread-inf", "--max-spread", "inf", needle="max spread 'inf'"),
    bench("bench-precision-zero", "--precision", "0",
          needle="precision 0.0: expected a fraction between 0 and 1 (0.05 for +-5 %)"),
    bench("bench-precision-percent", "--precision", "5%",
          needle="precision '5%': expected a number"),
    bench("bench-round-warmup-negative", "--round-warmup", "-1",
          needle="warm-up calls per round -1: expected an integer >= 0"),
    bench("bench-precision-over-max", "--precision", "0.05", "--min-seconds", "60",
          "--max-seconds", "30", needle="maximum seconds 30 is below the minimum 60"),
    bench("bench-max-seconds-nan", "--max-seconds", "nan", needle="maximum seconds 'nan'"),
    bench("bench-batch-empty-entry", "--batch-size", "1,,2",
          needle="batch size list '1,,2' has an empty entry"),
    bench("bench-batch-twice", "--batch-size", "1,1", needle="batch size 1 is given twice"),
    bench("bench-batch-huge", "--batch-size", str(10**300),
          needle="batch_size of 301 digits is too large"),
    bench("bench-prompt-huge", "--prompt-len", str(10**12), needle="seq_len 1000000000000"),
    # --- audit and workloads ----------------------------------------------------------------
    cli("audit-new-tokens-zero", "audit", "--model", "m", "--new-tokens", "0",
        needle="--new-tokens 0 is not valid: expected a whole number >= 1",
        files={"m/config.json": json.dumps(LLAMA)}),
    cli("audit-batch-huge", "audit", "--model", "m", "--batch-size", str(10**300),
        needle="--batch-size of 301 digits is too large",
        files={"m/config.json": json.dumps(LLAMA)}),
    cli("audit-seq-len-huge", "audit", "--model", "m", "--seq-len", str(2**40),
        needle="--seq-len 1099511627776 is too large: expected at most 1,073,741,824",
        files={"m/config.json": json.dumps(LLAMA)}),
    config("config-million-layers", "num_hidden_layers=1000000: expected at most 10,000",
           num_hidden_layers=10**6),
    config("config-huge-vocab", "vocab_size=1099511627776", vocab_size=2**40),
    config("config-huge-hidden", "hidden_size=", hidden_size=2**30),
    config("config-nested-layers", "text_config.num_hidden_layers=",
           text_config={"num_hidden_layers": 10**7}),
    profile("profile-memory-bare-number", 16, "'memory' must be a size with its unit"),
    profile("profile-memory-digit-string", "17179869184", "got '17179869184'"),
    profile("profile-memory-tiny", "16MiB", "'memory' must be at least 256MiB per GPU"),
    mark("mark-new-tokens-zero", "workload={'model': 'm', 'new_tokens': 0}",
         "new_tokens=0 is not a whole number >= 1"),
    mark("mark-batch-huge", f"workload={{'model': 'm', 'batch_size': {10**400}}}",
         "batch_size of 401 digits is too large"),
    mark("mark-seq-len-huge", f"workload={{'model': 'm', 'seq_len': {2**40}}}",
         "seq_len 1099511627776 is too large"),
    loader("load-workload-new-tokens-zero", "fp32", needle="new_tokens 0 is not valid",
           workload=(1, 32, 0)),
    loader("load-workload-batch-huge", "fp32", needle="batch_size of 401 digits is too large",
           workload=(10**400, 32)),
    # --- load_model keywords ----------------------------------------------------------------
    loader("load-device-map-missing-gpu", "fp32", needle="device 'cuda:9' does not exist here",
           device_map={"": "cuda:9"}),
    loader("load-device-map-missing-ordinal", "fp32", needle="device 9 does not exist here",
           device_map=9),
    loader("load-device-map-bad-device", "fp32", needle="device 'gpu' is not understood",
           device_map={"": "gpu"}),
    loader("load-nf4-compute-dtype", "nf4",
           needle="bnb_4bit_compute_dtype='float99' is not understood: expected one of",
           bnb_4bit_compute_dtype="float99"),
    loader("load-attention-unknown", "fp32", needle="attn_implementation='flashy' is not one",
           attn_implementation="flashy"),
    loader("load-attention-not-text", "fp32", needle="attn_implementation=3",
           attn_implementation=3),
    loader("load-unknown-keyword", "fp32", needle="load_model got frobnicate=1", frobnicate=1),
    loader("load-private-text", "fp32", needle="load_model got private='yes'", private="yes"),
    loader("load-threshold-nan", "int8", needle="llm_int8_threshold=nan",
           llm_int8_threshold=math.nan),
    loader("load-threshold-inf", "int8", needle="llm_int8_threshold=inf",
           llm_int8_threshold=math.inf),
    # --- the gpuinfer_bench and load_model fixtures -----------------------------------------
    fixture("bench-reference-a-mode-name", 'gpuinfer_bench(loaded, reference="fp32")',
            "gpuinfer_bench: reference='fp32' is not a result"),
    fixture("bench-not-a-model", 'gpuinfer_bench("model")',
            "gpuinfer_bench: 'model' is not a loaded model"),
    fixture("bench-unknown-keyword", "gpuinfer_bench(loaded, repeats=3)",
            "gpuinfer_bench: unknown keyword repeats=3"),
    fixture("bench-check-text", 'gpuinfer_bench(loaded, check="no")',
            "gpuinfer_bench: check='no' is not understood: expected True or False"),
    fixture("bench-fixture-min-seconds-nan", 'gpuinfer_bench(loaded, min_seconds=float("nan"))',
            "gpuinfer_bench: minimum seconds nan"),
    fixture("bench-two-models", "gpuinfer_bench(loaded, loaded)",
            "gpuinfer_bench: takes the loaded model and keywords"),
    fixture("load-model-private-text", 'load_model(MODEL, "fp32", private="yes")',
            "load_model: private='yes' is not understood"),
    # --- plugin options -----------------------------------------------------------------------
    plugin("machine-newline", "--gpuinfer-machine", "a\nb", needle="holds a control character"),
    plugin("machine-escape", "--gpuinfer-machine", "a\x1b[31m", needle="'a\\x1b[31m'"),
    Row("machine-env-tab", "plugin", (), "GPUINFER_MACHINE='a\\tb'", USAGE_ERROR,
        env={"GPUINFER": "1", "GPUINFER_MACHINE": "a\tb"}),
    # --- assert_generation_close is greedy --------------------------------------------------
    generation("generation-do-sample", "do_sample must stay False", do_sample=True),
    generation("generation-beams", "num_beams must stay 1", num_beams=4),
    generation("generation-contrastive", "leave penalty_alpha out", penalty_alpha=0.6),
    generation("generation-max-new-tokens", "give max_new_tokens= to", max_new_tokens=4),
]  # fmt: skip


def test_the_table_has_its_rows() -> None:
    assert len(TABLE) >= 40
    assert len({row.id for row in TABLE}) == len(TABLE)


@pytest.fixture(scope="module")
def names() -> dict[str, str]:
    from pytest_gpuinfer.tiny_models import trained_model_path

    return {MODEL: str(trained_model_path())}


def _run_loader(row: Row) -> None:
    from pytest_gpuinfer.loading import load_model
    from pytest_gpuinfer.tiny_models import trained_model_path

    with pytest.raises(InputError) as info:
        load_model(trained_model_path(), *row.args, **row.kwargs)
    one_line(str(info.value), row.needle)


def _run_generation(row: Row) -> None:
    import torch

    from pytest_gpuinfer.assertions import assert_generation_close

    model = torch.nn.Linear(2, 2)
    with pytest.raises(InputError) as info:
        assert_generation_close(model, model, ["x"], **row.kwargs)
    one_line(str(info.value), row.needle)


@pytest.mark.parametrize("row", params(TABLE))
def test_bad_input(
    row: Row,
    tmp_path: Path,
    names: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    if row.kind == "cli":
        run_cli(row, tmp_path, names)
    elif row.kind in ("plugin", "mark", "suite"):
        run_plugin(row, request.getfixturevalue("pytester"), monkeypatch, names)
    elif row.kind == "load_model":
        _run_loader(row)
    else:
        _run_generation(row)


def test_bench_cli_warns_past_the_model_positions_as_the_audit_does() -> None:
    from pytest_gpuinfer.bench.config import BenchConfig
    from pytest_gpuinfer.cli.bench import positions_warning
    from pytest_gpuinfer.tiny_models import trained_model_path

    # The shipped tiny model has 256 positions; the defaults are 256 + 64.
    defaults = BenchConfig(model=str(trained_model_path()))
    assert positions_warning(defaults) == (
        "seq_len + new_tokens = 320 is beyond the model's 256 positions"
    )
    short = BenchConfig(model=str(trained_model_path()), prompt_len=128, new_tokens=64)
    assert positions_warning(short) is None

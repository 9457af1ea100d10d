"""One table of bad inputs: each gets its exit code or exception, one line naming the value,
and no traceback.

The CLI rows run ``gpuinfer`` in a subprocess (as a user types it); the plugin rows
(environment, ini, options, markers) run pytest through ``pytester`` in-process; the
``load_model`` and assertion rows call the API. Rows whose fix belongs to other work are
marked xfail (not strict) while they fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_gpuinfer.probes.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
USAGE_ERROR = 4  # pytest.ExitCode.USAGE_ERROR
COLLECTION_ERROR = 2  # pytest.ExitCode.INTERRUPTED: errors during collection
PASSING_TEST = "def test_a():\n    pass\n"
OWNED_ELSEWHERE = "owned by loader/assertions work"


@dataclass(frozen=True)
class Bad:
    """One bad input. ``kind``: cli, plugin, load_model or assertion."""

    id: str
    kind: str
    args: tuple[Any, ...] = ()
    needle: str = ""
    """Text the one error line must contain: the value, or what the value is."""
    code: int = 2
    """Exit code (cli, plugin)."""
    files: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    stdout_full: bool = False
    json_error: bool = False
    owned_elsewhere: bool = False


def _profile(**fields: Any) -> dict[str, str]:
    return {"p.json": json.dumps(fields)}


def cli(id: str, *args: str, needle: str, **extra: Any) -> Bad:
    return Bad(id, "cli", args, needle, **extra)


def plugin(id: str, *args: str, needle: str, code: int = USAGE_ERROR, **extra: Any) -> Bad:
    return Bad(id, "plugin", args, needle, code, **extra)


def marker(id: str, mark: str, needle: str) -> Bad:
    source = f"import pytest\n\n@pytest.mark.gpuinfer({mark})\ndef test_marked():\n    pass\n"
    return Bad(id, "plugin", ("--gpuinfer",), needle, COLLECTION_ERROR, {"test_m.py": source})


def ini(id: str, text: str, needle: str) -> Bad:
    return Bad(id, "plugin", (), needle, USAGE_ERROR, {"pytest.ini": "[pytest]\n" + text})


def env(id: str, variables: dict[str, str], needle: str) -> Bad:
    return Bad(id, "plugin", (), needle, USAGE_ERROR, env=variables)


def loader(id: str, *args: Any, needle: str, owned: bool = False, **kwargs: Any) -> Bad:
    return Bad(id, "load_model", args, needle, kwargs=kwargs, owned_elsewhere=owned)


def assertion(id: str, *args: Any, needle: str, owned: bool = False, **kwargs: Any) -> Bad:
    return Bad(id, "assertion", args, needle, kwargs=kwargs, owned_elsewhere=owned)


# Profile files with one bad field: (id, the file's fields, what the error line names).
PROFILE_FIELD_ROWS: list[tuple[str, dict[str, Any], str]] = [
    (
        "gpu-count-huge",
        {"base": "t4", "gpu_count": 10**12},
        "'gpu_count' must be an integer >= 1, got 1000000000000",
    ),
    ("gpu-count-zero", {"base": "t4", "gpu_count": 0}, "got 0"),
    ("gpu-count-text", {"base": "t4", "gpu_count": "2"}, "got '2'"),
    ("gpu-count-bool", {"base": "t4", "gpu_count": True}, "got True"),
    (
        "memory-huge",
        {"base": "t4", "memory": "2048TiB"},
        "'memory' must be positive and at most 1PiB per GPU, got '2048TiB'",
    ),
    ("memory-negative", {"base": "t4", "memory": "-1GiB"}, "'-1GiB'"),
    ("memory-no-unit", {"base": "t4", "memory": "10G"}, "'10G'"),
    ("memory-zero", {"base": "t4", "memory": 0}, "got 0"),
    (
        "bandwidth-huge",
        {"base": "t4", "memory_bandwidth_gb_per_s": 1e12},
        "'memory_bandwidth_gb_per_s' must be a number above 0",
    ),
    ("bandwidth-nan", {"base": "t4", "memory_bandwidth_gb_per_s": float("nan")}, "got nan"),
    ("bandwidth-text", {"base": "t4", "memory_bandwidth_gb_per_s": "fast"}, "got 'fast'"),
    (
        "capability-huge",
        {"base": "t4", "compute_capability": "100000.0"},
        "'compute_capability' '100000.0' is out of range",
    ),
    ("capability-words", {"base": "t4", "compute_capability": "eight"}, "'eight'"),
    ("capability-list", {"base": "t4", "compute_capability": [8, 0]}, "got [8, 0]"),
    (
        "torch-cuda",
        {"base": "t4", "torch_cuda": "12"},
        "'torch_cuda' must look like \"12.6\", got '12'",
    ),
    ("unknown-key", {"base": "t4", "gpus": 2}, "unknown key 'gpus'"),
    ("base-unknown", {"base": "z80"}, "base 'z80'"),
    ("missing-key", {"name": "mine"}, "missing key 'gpu_name'"),
    (
        "bad-version",
        {"base": "t4", "software": {"bitsandbytes": "not-a-version"}},
        "'not-a-version'",
    ),
    ("software-list", {"base": "t4", "software": ["bitsandbytes"]}, "'software' must be a table"),
]

TABLE: list[Bad] = [
    # --- CLI: modes, profiles, memory, models, output -------------------------------------
    cli("modes-unknown", "audit", "--modes", "int9", needle="'int9'"),
    cli("modes-empty-entry", "audit", "--modes", "int8,,fp16", needle="'int8,,fp16'"),
    cli("modes-trailing-comma", "audit", "--modes", "int8,", needle="'int8,'"),
    cli("modes-duplicate", "audit", "--modes", "int8,INT8", needle="'int8' is given twice"),
    cli("modes-empty", "audit", "--modes", "", needle="no mode given"),
    cli("modes-only-commas", "audit", "--modes", ",,", needle="no mode given in ',,'"),
    cli("profile-unknown", "audit", "--profile", "z80", needle="'z80'"),
    cli("profile-empty", "audit", "--profile", " ", needle="profile name is empty"),
    cli("profile-directory", "audit", "--profile", ".", needle=". is a directory"),
    cli("profile-missing-file", "audit", "--profile", "nope.json", needle="does not exist"),
    *(
        cli(
            f"profile-{id}", "audit", "--profile", "p.json", needle=needle, files=_profile(**fields)
        )
        for id, fields, needle in PROFILE_FIELD_ROWS
    ),
    cli(
        "profile-not-json",
        "audit",
        "--profile",
        "p.json",
        needle="not valid JSON",
        files={"p.json": "{gpu_count: 2"},
    ),
    cli(
        "profile-json-array",
        "audit",
        "--profile",
        "p.json",
        needle="expected a table/object, got list",
        files={"p.json": "[1, 2]"},
    ),
    cli(
        "profile-not-toml",
        "audit",
        "--profile",
        "p.toml",
        needle="not valid TOML",
        files={"p.toml": "base = t4\n"},
    ),
    cli(
        "profile-not-utf8",
        "audit",
        "--profile",
        "p.toml",
        needle="not valid TOML",
        files={"p.toml": "\udcff"},
    ),
    cli(
        "profile-override-form",
        "audit",
        "--profile",
        "t4@bitsandbytes",
        needle="'bitsandbytes' is not of the form PACKAGE=VERSION",
    ),
    cli("max-memory-no-unit", "audit", "--max-memory", "0=10G", "--model", ".", needle="'10G'"),
    cli(
        "max-memory-cuda-key",
        "audit",
        "--max-memory",
        "cuda:0=1GiB",
        "--model",
        ".",
        needle="'cuda:0'",
    ),
    cli(
        "max-memory-without-model",
        "audit",
        "--max-memory",
        "0=1GiB",
        needle="give --model PATH too",
    ),
    cli("model-missing", "audit", "--model", "no/such/model", needle="'no/such/model'"),
    cli(
        "model-without-config",
        "audit",
        "--model",
        "empty",
        needle="empty",
        files={"empty/README": "no config here\n"},
    ),
    cli(
        "model-config-not-json",
        "audit",
        "--model",
        "m/config.json",
        needle="config.json",
        files={"m/config.json": "{not json"},
    ),
    cli("unknown-option", "audit", "--frobnicate", needle="--frobnicate"),
    cli("unknown-command", "frobnicate", needle="'frobnicate'"),
    cli("matrix-check-without-output", "matrix", "--check", needle="give --output FILE too"),
    cli(
        "matrix-check-missing-file",
        "matrix",
        "--check",
        "--output",
        "missing.md",
        needle="missing.md",
    ),
    cli(
        "matrix-output-no-directory",
        "matrix",
        "--output",
        "no/such/dir/m.md",
        needle="no/such/dir/m.md",
    ),
    cli("audit-stdout-full", "audit", needle="cannot write the output", stdout_full=True),
    cli("profiles-stdout-full", "profiles", needle="cannot write the output", stdout_full=True),
    cli(
        "json-unknown-mode", "audit", "--json", "--modes", "int9", needle="'int9'", json_error=True
    ),
    cli(
        "json-profile-directory",
        "audit",
        "--json",
        "--profile",
        ".",
        needle="is a directory",
        json_error=True,
    ),
    cli(
        "json-unknown-option",
        "audit",
        "--json",
        "--frobnicate",
        needle="--frobnicate",
        json_error=True,
    ),
    # --- plugin: environment ----------------------------------------------------------------
    env("env-enable-maybe", {"GPUINFER": "maybe"}, "GPUINFER='maybe' is not a boolean"),
    env("env-strict-sometimes", {"GPUINFER": "1", "GPUINFER_STRICT": "sometimes"}, "'sometimes'"),
    env("env-modes-unknown", {"GPUINFER": "1", "GPUINFER_MODES": "int4"}, "'int4'"),
    env("env-modes-empty-entry", {"GPUINFER": "1", "GPUINFER_MODES": "int8,,fp16"}, "'int8,,fp16'"),
    env(
        "env-modes-duplicate",
        {"GPUINFER": "1", "GPUINFER_MODES": "fp16,FP16"},
        "'fp16' is given twice",
    ),
    env("env-profile-unknown", {"GPUINFER": "1", "GPUINFER_PROFILE": "z80"}, "'z80'"),
    env("env-profile-directory", {"GPUINFER": "1", "GPUINFER_PROFILE": "."}, "is a directory"),
    env(
        "env-report-no-directory",
        {"GPUINFER": "1", "GPUINFER_REPORT": "no/dir/r.json"},
        "'no/dir/r.json' cannot be written",
    ),
    env("env-report-is-directory", {"GPUINFER": "1", "GPUINFER_REPORT": "."}, "'.' is a directory"),
    # --- plugin: ini file ----------------------------------------------------------------------
    ini("ini-enable-maybe", "gpuinfer = maybe\n", "'maybe'; expected one of 1/0, true/false"),
    ini("ini-strict-maybe", "gpuinfer = true\ngpuinfer_strict = maybe\n", "'maybe'"),
    ini("ini-modes-unknown", "gpuinfer = true\ngpuinfer_modes = int4\n", "'int4'"),
    ini("ini-profile-unknown", "gpuinfer = true\ngpuinfer_profile = z80\n", "'z80'"),
    ini(
        "ini-report-no-directory",
        "gpuinfer = true\ngpuinfer_report = no/dir/r.json\n",
        "'no/dir/r.json' cannot be written",
    ),
    # --- plugin: command-line options ------------------------------------------------------
    plugin("option-modes-unknown", "--gpuinfer-modes", "int4", needle="'int4'"),
    plugin("option-modes-commas", "--gpuinfer-modes", ",", needle="no mode given in ','"),
    plugin(
        "option-modes-duplicate", "--gpuinfer-modes", "int8,int8", needle="'int8' is given twice"
    ),
    plugin("option-profile-unknown", "--gpuinfer-profile", "z80", needle="'z80'"),
    plugin("option-profile-directory", "--gpuinfer-profile", ".", needle="is a directory"),
    plugin(
        "option-profile-gpu-count-huge",
        "--gpuinfer-profile",
        "p.json",
        needle="got 1000000000000",
        files=_profile(base="t4", gpu_count=10**12),
    ),
    plugin("option-report-directory", "--gpuinfer-report", ".", needle="is a directory"),
    plugin("option-share-zero", "--gpuinfer-share", "0", needle="--gpuinfer-share='0'"),
    plugin("option-share-text", "--gpuinfer-share", "x", needle="--gpuinfer-share='x'"),
    env("env-share-text", {"GPUINFER": "1", "GPUINFER_SHARE": "many"}, "GPUINFER_SHARE='many'"),
    plugin(
        "option-requirements-directory", "--gpuinfer-requirements", ".", needle="is a directory"
    ),
    plugin(
        "option-requirements-no-parent",
        "--gpuinfer-requirements",
        "missing/r.json",
        needle="does not exist",
    ),
    plugin("option-model-blank", "--gpuinfer-model", " ", needle="--gpuinfer-model is empty"),
    plugin("option-profile-blank", "--gpuinfer-profile", " ", needle="--gpuinfer-profile is empty"),
    # --- plugin: markers ---------------------------------------------------------------------
    marker("mark-memory-no-unit", 'free_memory="10G"', "free_memory '10G'"),
    marker("mark-memory-negative", 'total_memory="-1GiB"', "'-1GiB'"),
    marker("mark-memory-bool", "free_memory=True", "free_memory=True"),
    marker("mark-gpus-zero", "gpus=0", "gpus=0"),
    marker("mark-gpus-text", 'gpus="2"', "gpus='2'"),
    marker("mark-capability-words", 'compute_capability=">=eight"', "'>=eight'"),
    marker("mark-capability-float", "compute_capability=8.0", "compute_capability=8.0"),
    marker("mark-modes-unknown", 'modes=["int4"]', "'int4'"),
    marker("mark-modes-string", 'modes="int8"', "modes='int8' is not a list"),
    marker("mark-modes-empty", "modes=[]", "modes=[] is empty"),
    marker("mark-tensor-cores-unknown", 'tensor_cores=["fp5"]', "'fp5'"),
    marker("mark-packages-specifier", 'packages={"bitsandbytes": ">=>0.45"}', "'>=>0.45'"),
    marker("mark-packages-list", 'packages=["bitsandbytes"]', "packages=['bitsandbytes']"),
    marker("mark-unknown-keyword", "gpu=1", "unknown gpuinfer keyword gpu=1"),
    marker("mark-positional", '"int8"', "positional 'int8'"),
    # --- load_model ------------------------------------------------------------------------
    loader("load-mode-unknown", "trained", "int4", needle="'int4'"),
    loader("load-mode-none", "trained", None, needle="unknown mode None"),
    loader("load-path-missing", "missing", "fp32", needle="does not exist"),
    loader("load-dir-without-config", "noconfig", "fp32", needle="has no config.json"),
    loader(
        "load-dtype-for-fp32",
        "trained",
        "fp32",
        needle="dtype= contradicts mode 'fp32'",
        dtype="float16",
    ),
    loader(
        "load-quantization-config",
        "trained",
        "int8",
        needle="quantization_config=",
        quantization_config={},
    ),
    loader(
        "load-int8-option-on-fp16",
        "trained",
        "fp16",
        needle="llm_int8_threshold=",
        llm_int8_threshold=6.0,
    ),
    loader(
        "load-nf4-option-on-int8",
        "trained",
        "int8",
        needle="bnb_4bit_compute_dtype=",
        bnb_4bit_compute_dtype="float16",
    ),
    loader(
        "load-attn-for-fastpath",
        "trained",
        "fastpath",
        needle="attn_implementation=",
        attn_implementation="eager",
    ),
    loader("load-max-memory-no-unit", "trained", "fp32", needle="'10G'", max_memory="0=10G"),
    loader(
        "load-max-memory-cuda-key",
        "trained",
        "fp32",
        needle="'cuda:0'",
        max_memory={"cuda:0": "1GiB"},
    ),
    loader("load-task-unknown", "trained", "fp32", needle="'nonsense'", task="nonsense"),
    loader("load-truncated-weights", "truncated", "fp32", needle="model.safetensors"),
    loader("load-config-without-weights", "noweights", "fp32", needle="noweights"),
    loader(
        "load-threshold-text",
        "trained",
        "int8",
        needle="'high'",
        llm_int8_threshold="high",
    ),
    loader("load-dtype-text", "trained", "int8", needle="'high'", dtype="high"),
    loader("load-device-map-unknown", "trained", "fp32", needle="'gpu7'", device_map="gpu7"),
    loader("load-workload-text", "trained", "fp32", needle="'8x512'", workload="8x512"),
    loader("load-workload-zero-batch", "trained", "fp32", needle="batch_size 0", workload=(0, 64)),
    loader(
        "load-workload-negative-new",
        "trained",
        "fp32",
        needle="new_tokens -1",
        workload=(1, 64, -1),
    ),
    # --- assertions -------------------------------------------------------------------------
    assertion(
        "footprint-ratio-zero",
        "assert_memory_footprint",
        "model",
        "model",
        needle="min_ratio=0",
        min_ratio=0,
    ),
    assertion(
        "footprint-ratio-nan",
        "assert_memory_footprint",
        "model",
        "model",
        needle="min_ratio=nan",
        min_ratio=float("nan"),
    ),
    assertion(
        "footprint-ratio-positional",
        "assert_memory_footprint",
        "model",
        "model",
        "2",
        needle="write min_ratio='2'",
    ),
    assertion(
        "footprint-ratio-text",
        "assert_memory_footprint",
        "model",
        "model",
        needle="min_ratio='2'",
        min_ratio="2",
    ),
    assertion(
        "footprint-not-a-model",
        "assert_memory_footprint",
        "text",
        "model",
        needle="got str",
        min_ratio=2,
    ),
    assertion("quantized-bits", "assert_quantized", "model", needle="bits=3", bits=3),
    assertion(
        "generation-no-prompts",
        "assert_generation_close",
        "model",
        "model",
        [],
        needle="prompts is empty",
    ),
    assertion(
        "generation-zero-tokens",
        "assert_generation_close",
        "model",
        "model",
        ["x"],
        needle="max_new_tokens=0",
        max_new_tokens=0,
    ),
    assertion(
        "generation-top-k-text",
        "assert_generation_close",
        "model",
        "model",
        ["x"],
        needle="top_k='5'",
        top_k="5",
    ),
    assertion(
        "logits-mode-unknown",
        "assert_logits_close",
        "model",
        "model",
        "x",
        needle="mode='int4'",
        mode="int4",
    ),
    assertion(
        "embeddings-pooling",
        "assert_embeddings_close",
        "model",
        "model",
        ["x"],
        needle="pooling='max'",
        pooling="max",
    ),
    assertion(
        "embeddings-no-texts",
        "assert_embeddings_close",
        "model",
        "model",
        [],
        needle="texts is empty",
    ),
    assertion(
        "device-map-empty", "assert_device_map", "model", {}, needle="expected device map is empty"
    ),
    assertion(
        "on-device-no-tensors",
        "assert_on_device",
        "model",
        "text",
        needle="inputs hold no tensors (got str)",
    ),
]


def _params() -> list[Any]:
    params = []
    for row in TABLE:
        marks = []
        if row.owned_elsewhere:
            marks.append(pytest.mark.xfail(strict=False, reason=OWNED_ELSEWHERE))
        params.append(pytest.param(row, id=f"{row.kind}:{row.id}", marks=marks))
    return params


def test_the_table_is_large_and_ids_are_unique() -> None:
    assert len(TABLE) >= 60
    assert len({row.id for row in TABLE}) == len(TABLE)
    kinds = {row.kind for row in TABLE}
    assert kinds == {"cli", "plugin", "load_model", "assertion"}


def _write(directory: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8", errors="surrogateescape"))


def _one_line(text: str, needle: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{text}"
    assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def _run_cli(row: Bad, directory: Path) -> None:
    _write(directory, row.files)
    argv = [sys.executable, "-m", "pytest_gpuinfer.cli", *row.args]
    pythonpath = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}
    if row.stdout_full:
        if not Path("/dev/full").exists():
            pytest.skip("no /dev/full on this system")
        with open("/dev/full", "w") as full:
            done = subprocess.run(
                argv,
                cwd=directory,
                env=environ,
                stdout=full,
                stderr=subprocess.PIPE,
                text=True,
                timeout=120,
                check=False,
            )
        stdout = ""
    else:
        done = subprocess.run(
            argv,
            cwd=directory,
            env=environ,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        stdout = done.stdout
    assert "Traceback" not in done.stderr + stdout
    assert done.returncode == row.code, done.stderr
    line = _one_line(done.stderr, row.needle)
    assert line.startswith("gpuinfer")
    if row.json_error:
        error = json.loads(stdout)
        assert error["exit_code"] == 2 and row.needle in error["error"]
    else:
        assert stdout == ""


def _run_plugin(row: Bad, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    files = dict(row.files)
    if not any(name.startswith("test_") for name in files):
        files["test_a.py"] = PASSING_TEST
    _write(pytester.path, files)
    for name, value in row.env.items():
        monkeypatch.setenv(name, value)
    result = pytester.runpytest("-p", "no:randomly", "-p", "no:cacheprovider", *row.args)
    output = "\n".join(result.outlines + result.errlines)
    assert "Traceback" not in output
    assert result.ret == row.code, output
    if row.code == USAGE_ERROR:
        errors = [line for line in result.errlines if line.strip()]
        assert len(errors) == 1 and row.needle in errors[0], output
    else:
        # A bad mark is a collection error whose one line names the test and the value.
        # (pytest >= 9.2 repeats it in the short summary, as an "ERROR ..." line.)
        lines = [
            line for line in result.outlines if row.needle in line and not line.startswith("ERROR ")
        ]
        assert len(lines) == 1, output
        assert "test_marked" in lines[0] and "@pytest.mark.gpuinfer" in lines[0]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import shutil

    from pytest_gpuinfer.tiny_models import trained_model_path

    base = tmp_path_factory.mktemp("models")
    trained = trained_model_path()
    truncated = base / "truncated"
    shutil.copytree(trained, truncated)
    weights = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    noweights = base / "noweights"
    shutil.copytree(trained, noweights)
    (noweights / "model.safetensors").unlink()
    noconfig = base / "noconfig"
    noconfig.mkdir()
    return {
        "trained": trained,
        "truncated": truncated,
        "noweights": noweights,
        "noconfig": noconfig,
        "missing": base / "missing",
    }


def _run_loader(row: Bad, model_dirs: Mapping[str, Path]) -> None:
    from pytest_gpuinfer.loading import load_model

    path, *rest = row.args
    with pytest.raises(InputError) as info:
        load_model(model_dirs[path], *rest, **row.kwargs)
    _one_line(str(info.value), row.needle)


def _run_assertion(row: Bad) -> None:
    import torch

    from pytest_gpuinfer import assertions

    model = torch.nn.Linear(2, 2)
    stand_ins: dict[str, object] = {"model": model, "text": "not a model"}
    function: Callable[..., object] = getattr(assertions, row.args[0])
    args = [stand_ins.get(a, a) if isinstance(a, str) else a for a in row.args[1:]]
    with pytest.raises(InputError) as info:
        function(*args, **row.kwargs)
    _one_line(str(info.value), row.needle)


@pytest.mark.parametrize("row", _params())
def test_bad_input(
    row: Bad, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    if row.kind == "cli":
        _run_cli(row, tmp_path)
    elif row.kind == "plugin":
        # Only here: pytester restores sys.modules after each test, and torch, once
        # imported by a load_model row, must not be dropped and imported again.
        _run_plugin(row, request.getfixturevalue("pytester"), monkeypatch)
    elif row.kind == "load_model":
        _run_loader(row, request.getfixturevalue("model_dirs"))
    else:
        _run_assertion(row)

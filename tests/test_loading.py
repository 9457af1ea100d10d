"""The loader on CPU: every mode for every tiny architecture, the cache, and bad input."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path
from typing import Any

import pytest

from pytest_gpuinfer.loading import (
    LoadedModel,
    ModelCache,
    ModeUnavailable,
    infer_task,
    load_model,
    memory_in_use,
    save_model,
)
from pytest_gpuinfer.probes.errors import InputError
from pytest_gpuinfer.probes.nvml import probe_nvml
from pytest_gpuinfer.probes.report import DriverInfo, Finding, Report, Status, Verdict
from pytest_gpuinfer.probes.software import probe_software

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TASK_BY_ARCHITECTURE = {
    "llama": "causal-lm",
    "gpt2": "causal-lm",
    "bloom": "causal-lm",
    "opt": "causal-lm",
    "bert": "feature-extraction",
    "t5": "seq2seq-lm",
}
MODES_ON_CPU = ("fp32", "fp16", "bf16", "int8", "nf4", "fastpath")
FLOAT_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
# Read through NVML, as the plugin does, so importing this module never initialises CUDA.
ON_GPU = bool(probe_nvml().gpus) and torch.version.cuda is not None
# The GPU-only tests (release within 1%, CUDA OOM, int8 CPU offload) are in test_gpu.py.


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(p) for p in name.split(".")[:2] if p.isdigit())


BETTERTRANSFORMER_STACK = _version(transformers.__version__) < (4, 49)


@pytest.fixture(scope="module")
def report() -> Report:
    """This machine's report, as the plugin would probe it."""
    from pytest_gpuinfer import probes

    return probes.probe()


def _expected_devices() -> tuple[str, ...]:
    return ("cuda:0",) if ON_GPU else ("cpu",)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from pytest_gpuinfer.tiny_models import write_tiny_model

    root = tmp_path_factory.mktemp("tiny-models")
    encoder_tasks = {"bert": "encoder"}
    return {
        name: write_tiny_model(name, root / name, task=encoder_tasks.get(name))
        for name in TASK_BY_ARCHITECTURE
    }


def _require(report: Report, mode: str) -> None:
    verdict = report.verdicts[mode]
    if not verdict.ok:
        pytest.skip(f"{mode} is {verdict.status.value} on this stack: {verdict.reason}")


def _forward(loaded: LoadedModel) -> Any:
    assert loaded.tokenizer is not None
    inputs = loaded.tokenizer(["hello there", "hi"], return_tensors="pt", padding=True)
    inputs = {k: v.to(loaded.input_device) for k, v in inputs.items()}
    if loaded.task == "seq2seq-lm":
        inputs["decoder_input_ids"] = inputs["input_ids"][:, :2]
    with torch.no_grad():
        return loaded.model(**inputs)


def _float_report_verdicts(status: Status, reason: str) -> dict[str, Verdict]:
    return {
        mode: Verdict(mode=mode, status=status, findings=[Finding("test", status, reason)])
        for mode in MODES_ON_CPU
    }


# --------------------------------------------------------------------- every mode, every arch


@pytest.mark.parametrize("mode", MODES_ON_CPU)
@pytest.mark.parametrize("architecture", list(TASK_BY_ARCHITECTURE))
def test_every_mode_loads_and_runs(
    architecture: str, mode: str, tiny: dict[str, Path], report: Report
) -> None:
    verdict = report.verdicts[mode]
    if not verdict.ok:
        with pytest.raises(ModeUnavailable, match="unavailable"):
            load_model(
                tiny[architecture], mode, task=TASK_BY_ARCHITECTURE[architecture], report=report
            )
        pytest.skip(f"{mode} is {verdict.status.value} on this stack: {verdict.reason}")

    loaded = load_model(
        tiny[architecture], mode, task=TASK_BY_ARCHITECTURE[architecture], report=report
    )
    model = loaded.model
    assert loaded.mode == mode
    assert loaded.devices == _expected_devices()
    assert loaded.tokenizer is not None
    assert loaded.footprint_bytes == model.get_memory_footprint() > 0
    assert not model.training

    if mode in FLOAT_DTYPES:
        expected = getattr(torch, FLOAT_DTYPES[mode])
        assert model.get_input_embeddings().weight.dtype == expected
        assert loaded.applied.startswith(FLOAT_DTYPES[mode])
        assert loaded.fallback is None
    elif mode == "int8":
        import bitsandbytes as bnb

        quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear8bitLt)]
        assert quantized and len(quantized) == loaded.quantized_layers
        for module in quantized:
            assert isinstance(module.weight, bnb.nn.Int8Params)
            assert module.weight.dtype == torch.int8
        _assert_only_expected_linears_left(model)
        assert "load_in_8bit=True" in loaded.applied
        assert loaded.fallback is None
    elif mode == "nf4":
        import bitsandbytes as bnb

        quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
        assert quantized and len(quantized) == loaded.quantized_layers
        for module in quantized:
            assert isinstance(module.weight, bnb.nn.Params4bit)
            assert module.weight.quant_state.quant_type == "nf4"
        _assert_only_expected_linears_left(model)
        assert "bnb_4bit_quant_type='nf4'" in loaded.applied
    else:
        _assert_fastpath(loaded, architecture)

    output = _forward(loaded)
    first = output[0] if isinstance(output, tuple) else next(iter(output.values()))
    assert torch.isfinite(first.float()).all()


def _assert_only_expected_linears_left(model: Any) -> None:
    """Every nn.Linear outside lm_head and the model's keep-in-fp32 modules is quantized."""
    keep = tuple(getattr(model, "_keep_in_fp32_modules", None) or ())
    left = [
        name
        for name, module in model.named_modules()
        if type(module) is torch.nn.Linear
        and not name.endswith("lm_head")
        and not any(k in name.split(".") for k in keep)
    ]
    assert left == []


def _assert_fastpath(loaded: LoadedModel, architecture: str) -> None:
    if loaded.bettertransformer:
        assert loaded.applied.startswith("bettertransformer")
        assert any(
            type(m).__module__.startswith("optimum.bettertransformer")
            for m in loaded.model.modules()
        )
        return
    # Read back from the model, never from the request.
    assert loaded.attn_implementation == loaded.model.config._attn_implementation
    if architecture == "bloom" and not _supports_sdpa(loaded.model):
        assert loaded.attn_implementation == "eager"
        assert loaded.applied.startswith("eager (fallback: ")
        assert "SDPA" in (loaded.fallback or "")
    else:
        assert loaded.attn_implementation == "sdpa"
        assert loaded.applied.startswith("sdpa")


def _supports_sdpa(model: Any) -> bool:
    return getattr(type(model), "_supports_sdpa", True) is not False


# --------------------------------------------------------------------- placement and options


def test_explicit_cpu_device_map(tiny: dict[str, Path], report: Report) -> None:
    loaded = load_model(tiny["llama"], "fp32", device_map={"": "cpu"}, report=report)
    assert loaded.devices == ("cpu",)
    # transformers 5.x sets no hf_device_map for a map naming one device.
    assert loaded.device_map is None or set(loaded.device_map.values()) == {"cpu"}
    _require(report, "int8")
    int8 = load_model(tiny["llama"], "int8", device_map={"": "cpu"}, report=report)
    assert int8.devices == ("cpu",)
    assert int8.quantized_layers > 0


def test_max_memory_string_form_is_accepted(tiny: dict[str, Path], report: Report) -> None:
    loaded = load_model(tiny["gpt2"], "fp32", max_memory="cpu=2GiB", report=report)
    assert loaded.devices == ("cpu",)
    assert loaded.device_map is None or set(loaded.device_map.values()) == {"cpu"}


def test_int8_options_reach_bitsandbytes(tiny: dict[str, Path], report: Report) -> None:
    _require(report, "int8")
    loaded = load_model(
        tiny["llama"],
        "int8",
        report=report,
        llm_int8_threshold=4.0,
        llm_int8_skip_modules=["down_proj", "lm_head"],
    )
    config = loaded.model.config.quantization_config
    assert config.llm_int8_threshold == 4.0
    kept = [n for n, m in loaded.model.named_modules() if type(m) is torch.nn.Linear]
    assert sorted(kept) == sorted(
        [f"model.layers.{i}.mlp.down_proj" for i in range(2)] + ["lm_head"]
    )
    assert "llm_int8_threshold=4.0" in loaded.applied


def test_int8_cpu_offload_flag_on_a_cpu_map_is_reported_as_not_quantized(
    tiny: dict[str, Path], report: Report
) -> None:
    _require(report, "int8")
    with pytest.warns(UserWarning, match="quantized no layer"):
        loaded = load_model(
            tiny["llama"],
            "int8",
            device_map={"": "cpu"},
            report=report,
            llm_int8_enable_fp32_cpu_offload=True,
        )
    assert loaded.quantized_layers == 0
    assert loaded.applied.startswith("not quantized (fallback: ")
    assert "llm_int8_enable_fp32_cpu_offload" in (loaded.fallback or "")


def test_no_tokenizer_gives_none(tmp_path: Path, tiny: dict[str, Path], report: Report) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((tiny["gpt2"] / name).read_bytes())
    loaded = load_model(bare, "fp32", report=report)
    assert loaded.tokenizer is None


def test_save_model_round_trips(tmp_path: Path, tiny: dict[str, Path], report: Report) -> None:
    loaded = load_model(tiny["bert"], "fastpath", task="encoder", report=report)
    saved = save_model(loaded, tmp_path / "saved")
    # The fastpath loads fp16 on a GPU, fp32 on a CPU: compare in that precision.
    precision = "fp16" if ON_GPU else "fp32"
    again = load_model(saved, precision, task="encoder", report=report)
    original = load_model(tiny["bert"], precision, task="encoder", report=report)
    assert again.tokenizer is not None
    # Compared with a plain load: a BetterTransformer model's own state dict has fused keys.
    expected = original.model.state_dict()
    assert again.model.state_dict().keys() == expected.keys()
    for name, tensor in again.model.state_dict().items():
        assert torch.equal(tensor, expected[name]), name


def test_infer_task_reads_the_architecture(tiny: dict[str, Path]) -> None:
    assert infer_task(tiny["llama"]) == "causal-lm"
    assert infer_task(tiny["t5"]) == "seq2seq-lm"
    assert infer_task(tiny["bert"]) == "feature-extraction"


# --------------------------------------------------------------------- BetterTransformer (4.x)


@pytest.mark.skipif(not BETTERTRANSFORMER_STACK, reason="BetterTransformer needs transformers<4.49")
@pytest.mark.parametrize("architecture", ["bert", "gpt2", "bloom"])
def test_bettertransformer_applied_and_reversed_before_saving(
    architecture: str, tmp_path: Path, tiny: dict[str, Path], report: Report
) -> None:
    pytest.importorskip("optimum.bettertransformer")
    task = TASK_BY_ARCHITECTURE[architecture]
    loaded = load_model(tiny[architecture], "fastpath", task=task, report=report)
    assert loaded.bettertransformer, loaded.applied
    _assert_fastpath(loaded, architecture)
    _forward(loaded)
    saved = save_model(loaded, tmp_path / "saved")
    again = load_model(saved, "fp32", task=task, report=report)
    assert not any(type(m).__module__.startswith("optimum") for m in again.model.modules())


@pytest.mark.skipif(not BETTERTRANSFORMER_STACK, reason="BetterTransformer needs transformers<4.49")
def test_bettertransformer_refused_architecture_falls_back_to_sdpa(
    tiny: dict[str, Path], report: Report
) -> None:
    pytest.importorskip("optimum.bettertransformer")
    loaded = load_model(tiny["llama"], "fastpath", report=report)
    assert not loaded.bettertransformer
    assert loaded.attn_implementation == "sdpa"
    assert loaded.applied.startswith("sdpa (fallback: ")
    assert "llama" in (loaded.fallback or "")


# --------------------------------------------------------------------- the cache


def test_cache_loads_once_per_key(tiny: dict[str, Path], report: Report) -> None:
    cache = ModelCache(report)
    first = cache.get(tiny["gpt2"], "fp32")
    again = cache.get(str(tiny["gpt2"]), "fp32", device_map="auto")
    assert again is first
    assert cache.loads == 1
    other = cache.get(tiny["gpt2"], "bf16")
    assert other is not first
    assert cache.loads == 2
    assert len(cache) == 2
    cache.get(tiny["gpt2"], "fp16", revision="main")
    cache.get(tiny["gpt2"], "fp16", revision="main")
    assert cache.loads == 3


def test_private_copy_is_independent(tiny: dict[str, Path], report: Report) -> None:
    cache = ModelCache(report)
    shared = cache.get(tiny["llama"], "fp32")
    private = cache.get(tiny["llama"], "fp32", private=True)
    assert private.model is not shared.model
    assert cache.loads == 1  # a float model is deep-copied, not reloaded
    with torch.no_grad():
        private.model.get_input_embeddings().weight.zero_()
    assert shared.model.get_input_embeddings().weight.abs().sum() > 0
    assert cache.get(tiny["llama"], "fp32") is shared


def test_private_quantized_model_is_a_fresh_load(tiny: dict[str, Path], report: Report) -> None:
    _require(report, "int8")
    cache = ModelCache(report)
    shared = cache.get(tiny["opt"], "int8")
    private = cache.get(tiny["opt"], "int8", private=True)
    assert private.model is not shared.model
    assert private.quantized_layers == shared.quantized_layers > 0
    assert cache.loads == 2
    assert cache.get(tiny["opt"], "int8") is shared


def test_release_and_clear_free_the_model(tiny: dict[str, Path], report: Report) -> None:
    cache = ModelCache(report)
    key = cache.key(tiny["gpt2"], "fp16")
    model_ref = weakref.ref(cache.get(tiny["gpt2"], "fp16").model)
    assert key in cache
    assert cache.release(key) is True
    gc.collect()
    assert model_ref() is None
    assert key not in cache
    assert cache.release(key) is False

    other_ref = weakref.ref(cache.get(tiny["gpt2"], "bf16").model)
    cache.clear()
    gc.collect()
    assert other_ref() is None
    assert len(cache) == 0
    assert memory_in_use() == 0 or ON_GPU


# --------------------------------------------------------------------- gating and bad input


def test_unsupported_verdict_raises_before_transformers_is_imported(
    tiny: dict[str, Path],
) -> None:
    script = textwrap.dedent(
        f"""
        import json, sys
        from pytest_gpuinfer.probes.report import (
            DriverInfo, Finding, Report, SoftwareStack, Status, Verdict)
        from pytest_gpuinfer.loading import ModeUnavailable, load_model
        import pytest_gpuinfer.plugin.fixtures  # importing the fixtures must stay cheap too
        reason = "int8 needs compute capability >= 7.5; found Tesla P100 (6.0)"
        verdict = Verdict("int8", Status.UNSUPPORTED, [Finding("t", Status.UNSUPPORTED, reason)])
        report = Report([], DriverInfo(), SoftwareStack("3.11", "Linux", {{}}), {{"int8": verdict}})
        try:
            load_model({str(tiny["llama"])!r}, "int8", report=report)
        except ModeUnavailable as error:
            heavy = [m for m in ("torch", "transformers", "bitsandbytes") if m in sys.modules]
            print(json.dumps({{"reason": error.reason, "heavy": heavy}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {
        "reason": "int8 needs compute capability >= 7.5; found Tesla P100 (6.0)",
        "heavy": [],
    }


def test_simulated_report_cannot_execute(tiny: dict[str, Path], report: Report) -> None:
    simulated = Report(
        gpus=[],
        driver=DriverInfo(),
        software=report.software,
        verdicts=report.verdicts,
        profile="a100-40gb",
    )
    with pytest.raises(ModeUnavailable, match="simulated profile 'a100-40gb'"):
        load_model(tiny["llama"], "fp32", report=simulated)


def test_degraded_verdict_still_loads(tiny: dict[str, Path]) -> None:
    software = probe_software()
    verdicts = _float_report_verdicts(Status.DEGRADED, "slow kernels")
    degraded = Report(gpus=[], driver=DriverInfo(), software=software, verdicts=verdicts)
    assert load_model(tiny["gpt2"], "fp16", report=degraded).mode == "fp16"


def _one_line(error: pytest.ExceptionInfo[InputError]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"mode": "int4"}, "unknown mode 'int4'; expected one of: fp32, fp16, bf16, int8, nf4"),
        ({"task": "translation"}, "unknown task 'translation': expected one of causal-lm"),
        ({"max_memory": {"cuda:0": "1GiB"}}, "use the integer 0"),
        ({"max_memory": "10G"}, "'10G' is not understood"),
        ({"max_memory": {0: "10G"}}, "'10G' is not understood"),
        ({"mode": "fp16", "dtype": "float32"}, "dtype= contradicts mode 'fp16'"),
        ({"mode": "fp16", "llm_int8_threshold": 6.0}, "only applies to mode 'int8'"),
        ({"mode": "fastpath", "attn_implementation": "eager"}, "contradicts mode 'fastpath'"),
        ({"mode": "fp32", "quantization_config": None}, "mode 'fp32' decides it"),
    ],
)
def test_bad_arguments_give_one_clear_input_error(
    arguments: dict[str, Any], expected: str, tiny: dict[str, Path], report: Report
) -> None:
    call = {"mode": "fp32", **arguments}
    mode = call.pop("mode")
    with pytest.raises(InputError) as error:
        load_model(tiny["llama"], mode, report=report, **call)
    assert expected in _one_line(error)


def test_missing_path(tmp_path: Path, report: Report) -> None:
    with pytest.raises(InputError) as error:
        load_model(tmp_path / "nowhere", "fp32", report=report)
    assert _one_line(error) == f"model path {str(tmp_path / 'nowhere')!r} does not exist"


def test_directory_that_is_not_a_model(tmp_path: Path, report: Report) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(InputError) as error:
        load_model(tmp_path, "fp32", report=report)
    assert "is not a model directory: it has no config.json" in _one_line(error)
    with pytest.raises(InputError, match="is a file, not a model directory"):
        load_model(tmp_path / "notes.txt", "fp32", report=report)


def test_task_that_does_not_fit_the_model(tiny: dict[str, Path], report: Report) -> None:
    with pytest.raises(InputError) as error:
        load_model(tiny["t5"], "fp32", task="causal-lm", report=report)
    assert "try task 'seq2seq-lm'" in _one_line(error)


def test_bad_input_in_cache_get_is_the_same_error(tiny: dict[str, Path], report: Report) -> None:
    cache = ModelCache(report)
    with pytest.raises(InputError, match="unknown mode 'int4'"):
        cache.get(tiny["llama"], "int4")
    assert cache.loads == 0

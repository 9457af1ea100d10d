"""Memory estimates from configs on the meta device, fits on GPUInfo, device-map plans."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_gpuinfer.probes.errors import InputError
from pytest_gpuinfer.probes.memory_fit import (
    CUDA_CONTEXT_BYTES,
    MemoryEstimate,
    estimate_model_memory,
    fit_on_devices,
    needed_bytes,
)
from pytest_gpuinfer.probes.memory_units import parse_max_memory
from pytest_gpuinfer.probes.memory_workload import Workload, estimate_workload
from pytest_gpuinfer.probes.report import MODES, GPUInfo, Status

GiB = 2**30

LLAMA_1B = {  # TinyLlama-shaped
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 2048,
    "num_hidden_layers": 22,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "intermediate_size": 5632,
    "vocab_size": 32000,
}
GPT2_XL = {
    "model_type": "gpt2",
    "architectures": ["GPT2LMHeadModel"],
    "n_embd": 1600,
    "n_layer": 48,
    "n_head": 25,
}
BLOOM_1B7 = {
    "model_type": "bloom",
    "architectures": ["BloomForCausalLM"],
    "hidden_size": 2048,
    "n_layer": 24,
    "n_head": 16,
    "vocab_size": 250880,
}
TINY_LLAMA = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 1000,
}


def write_model(tmp_path: Path, config: dict[str, Any], name: str = "model") -> Path:
    directory = tmp_path / name
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.fixture(scope="module")
def llama_1b(tmp_path_factory: pytest.TempPathFactory) -> MemoryEstimate:
    return estimate_model_memory(write_model(tmp_path_factory.mktemp("m"), LLAMA_1B))


# ----------------------------------------------------------------------------- estimates


@pytest.mark.parametrize(
    ("config", "transformers_ratio"),
    # fp16 / int8 footprint ratios asserted by transformers' own bitsandbytes tests.
    [(LLAMA_1B, 1.79), (GPT2_XL, 1.87), (BLOOM_1B7, 1.54)],
    ids=["tinyllama", "gpt2-xl", "bloom-1b7"],
)
def test_int8_ratio_matches_transformers_footprint_tests(
    tmp_path: Path, config: dict[str, Any], transformers_ratio: float
) -> None:
    estimate = estimate_model_memory(write_model(tmp_path, config))
    ratio = estimate.weights_bytes("fp16") / estimate.weights_bytes("int8")
    assert ratio == pytest.approx(transformers_ratio, abs=0.05)
    assert 1.0 < ratio < 2.0  # embeddings, norms and lm_head stay 16-bit


def test_llama_1b_figures(llama_1b: MemoryEstimate) -> None:
    assert llama_1b.model_class == "LlamaForCausalLM"
    assert llama_1b.parameter_count == 1_100_048_384
    assert llama_1b.embedding_parameters == 32000 * 2048
    assert llama_1b.linear_parameters == llama_1b.quantizable_linear_parameters + 32000 * 2048
    assert (
        llama_1b.linear_parameters + llama_1b.embedding_parameters + llama_1b.other_parameters
        == llama_1b.parameter_count
    )
    assert "lm_head" in llama_1b.kept_in_full_precision
    modes = llama_1b.modes
    assert list(modes) == list(MODES)
    assert modes["fp32"].parameter_bytes == 4 * llama_1b.parameter_count
    assert modes["fp16"].parameter_bytes == 2 * llama_1b.parameter_count
    assert modes["bf16"].total_bytes == modes["fp16"].total_bytes
    assert modes["fastpath"].total_bytes == modes["fp16"].total_bytes
    assert modes["fp16"].buffer_bytes > 0  # rotary inv_freq
    assert modes["int8"].quantized_parameters == llama_1b.quantizable_linear_parameters
    assert modes["nf4"].total_bytes < modes["int8"].total_bytes < modes["fp16"].total_bytes
    # REFERENCE §3: 1.1B Llama on H100 measured 2.20 GB fp16.
    assert modes["fp16"].total_bytes / 1e9 == pytest.approx(2.20, abs=0.01)


def test_int8_bytes_are_weight_plus_row_scale(tmp_path: Path) -> None:
    estimate = estimate_model_memory(write_model(tmp_path, TINY_LLAMA))
    quantized = estimate.quantizable_linear_parameters
    # Per layer: q, k, v, o (out 64, 32, 32, 64) + gate, up (128) + down (64) rows.
    rows = 4 * (64 + 32 + 32 + 64 + 128 + 128 + 64)
    rest = estimate.parameter_count - quantized
    buffers = estimate.modes["int8"].buffer_bytes
    assert estimate.weights_bytes("int8") == quantized + 4 * rows + 2 * rest + buffers


def test_nf4_double_quant_is_smaller(tmp_path: Path) -> None:
    directory = write_model(tmp_path, LLAMA_1B)
    plain = estimate_model_memory(directory, ["nf4"])
    nested = estimate_model_memory(directory, ["nf4"], nf4_double_quant=True)
    assert list(plain.modes) == ["nf4"]
    assert nested.weights_bytes("nf4") < plain.weights_bytes("nf4")
    quantized = plain.quantizable_linear_parameters
    # 0.5 B per weight + 4 B per 64 weights.
    overhead = plain.weights_bytes("nf4") - 2 * (plain.parameter_count - quantized)
    assert overhead / quantized == pytest.approx(0.5 + 4 / 64, rel=1e-3)


def test_tied_embeddings_are_counted_once(tmp_path: Path) -> None:
    tied = estimate_model_memory(write_model(tmp_path, {**TINY_LLAMA, "tie_word_embeddings": True}))
    untied = estimate_model_memory(
        write_model(tmp_path, {**TINY_LLAMA, "tie_word_embeddings": False}, "untied")
    )
    assert untied.parameter_count - tied.parameter_count == 1000 * 64
    assert tied.tied_parameters == [["lm_head.weight", "model.embed_tokens.weight"]]
    assert tied.weights_bytes("fp16") < untied.weights_bytes("fp16")


def test_gpt2_conv1d_is_quantized_and_tied_head_kept(tmp_path: Path) -> None:
    config = {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 500}
    estimate = estimate_model_memory(write_model(tmp_path, config))
    assert estimate.model_class == "GPT2LMHeadModel"  # AutoModelForCausalLM fallback
    # Conv1D c_attn, c_proj, c_fc, mlp.c_proj per layer are converted by bitsandbytes.
    per_layer = 64 * 192 + 64 * 64 + 64 * 256 + 256 * 64
    assert estimate.quantizable_linear_parameters == 2 * per_layer
    assert estimate.embedding_parameters == 500 * 64 + 1024 * 64


def test_keep_in_fp32_modules_stay_fp32_in_fp16(tmp_path: Path) -> None:
    config = {"model_type": "t5", "d_model": 64, "d_ff": 128, "num_layers": 2, "num_heads": 4,
              "d_kv": 16, "vocab_size": 500}  # fmt: skip
    estimate = estimate_model_memory(write_model(tmp_path, config))
    assert "wo" in estimate.kept_in_full_precision
    # T5 keeps "wo" in fp32 when loading fp16, not bf16.
    assert estimate.weights_bytes("fp16") > estimate.weights_bytes("bf16")


def test_config_file_path_is_accepted(tmp_path: Path) -> None:
    directory = write_model(tmp_path, TINY_LLAMA)
    by_dir = estimate_model_memory(directory)
    by_file = estimate_model_memory(directory / "config.json")
    assert by_file.parameter_count == by_dir.parameter_count


def test_hub_id_from_local_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "hub"
    snapshot = cache / "models--acme--tiny" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(TINY_LLAMA))
    (cache / "models--acme--tiny" / "refs").mkdir()
    (cache / "models--acme--tiny" / "refs" / "main").write_text("0" * 40)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    estimate = estimate_model_memory("acme/tiny")
    assert estimate.model_type == "llama"
    assert estimate.config_path == str(snapshot / "config.json")


# ----------------------------------------------------------------------------- bad input


def test_missing_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    missing = tmp_path / "nope"
    with pytest.raises(InputError) as info:
        estimate_model_memory(missing)
    assert str(info.value) == (
        f"model '{missing}' does not exist: expected a model directory, a config.json, "
        "or a hub id already in the local Hugging Face cache"
    )


def test_uncached_hub_id(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=r"^model 'acme/never-downloaded' does not exist: "):
        estimate_model_memory("acme/never-downloaded")


def test_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        estimate_model_memory(tmp_path)
    assert str(info.value) == f"'{tmp_path}' is not a model directory: no config.json"


def test_invalid_json(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "llama",')
    with pytest.raises(InputError) as info:
        estimate_model_memory(tmp_path)
    message = str(info.value)
    assert message.startswith(f"config '{tmp_path / 'config.json'}' is not valid JSON: ")
    assert "line 1" in message
    assert "\n" not in message


def test_json_not_an_object(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(InputError, match=r"is not valid JSON config: expected a JSON object"):
        estimate_model_memory(tmp_path)


def test_config_without_model_type(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 64}))
    with pytest.raises(InputError) as info:
        estimate_model_memory(tmp_path)
    assert str(info.value).startswith(
        f"config '{tmp_path / 'config.json'}' has no model_type: expected"
    )


def test_config_with_unknown_model_type(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "not-a-model"}))
    with pytest.raises(InputError) as info:
        estimate_model_memory(tmp_path)
    message = str(info.value)
    assert "has model_type 'not-a-model', which transformers" in message
    assert "\n" not in message


def test_unreadable_config(tmp_path: Path) -> None:
    # Running as root defeats chmod; undecodable bytes are unreadable for everyone.
    (tmp_path / "config.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(InputError) as info:
        estimate_model_memory(tmp_path)
    message = str(info.value)
    assert message.startswith(f"config '{tmp_path / 'config.json'}' cannot be read: ")
    assert "\n" not in message


def test_unknown_mode(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^mode 'int4' is not known: expected one of fp32"):
        estimate_model_memory(write_model(tmp_path, TINY_LLAMA), ["fp16", "int4"])


# ----------------------------------------------------------------------------- fits


def gpu(index: int, free_gib: float | None, total_gib: float | None) -> GPUInfo:
    return GPUInfo(
        index=index,
        name="Test GPU",
        free_memory_bytes=None if free_gib is None else int(free_gib * GiB),
        total_memory_bytes=None if total_gib is None else int(total_gib * GiB),
        unknown={} if free_gib is not None else {"free_memory_bytes": "NVML NotSupported"},
    )


def test_fits_on_one_gpu(llama_1b: MemoryEstimate) -> None:
    fit = fit_on_devices(llama_1b, [gpu(0, 1, 24), gpu(1, 20, 24)])
    fp16 = fit.fits["fp16"]
    assert fp16.status is Status.SUPPORTED
    assert fp16.placement == "single-gpu"
    assert fp16.gpus == [1]
    predicted = estimate_workload(llama_1b, "fp16", Workload())
    assert fp16.needed_bytes == predicted.peak_reserved_bytes
    assert fp16.needed_bytes > needed_bytes("fp16", llama_1b.weights_bytes("fp16")) * 0.9
    assert "GPU 1 has" in fp16.reason


def test_margins(llama_1b: MemoryEstimate) -> None:
    need = estimate_workload(llama_1b, "fp16", Workload()).peak_reserved_bytes
    assert needed_bytes("int8", 900) == 1000  # weights-only floor: transformers' 0.90 factor
    just_enough = GPUInfo(
        0, free_memory_bytes=need + CUDA_CONTEXT_BYTES, total_memory_bytes=need * 2
    )
    short = GPUInfo(0, free_memory_bytes=need + CUDA_CONTEXT_BYTES - 1, total_memory_bytes=need)
    assert fit_on_devices(llama_1b, [just_enough]).fits["fp16"].status is Status.SUPPORTED
    assert fit_on_devices(llama_1b, [short]).fits["fp16"].status is Status.UNSUPPORTED


def test_fits_only_split_across_gpus(llama_1b: MemoryEstimate) -> None:
    # 2 GiB each: fp16 (2.6 GiB) only split; int8 (1.9 GiB, with the 16-bit load
    # residue the H100 calibration added) on one.
    fit = fit_on_devices(llama_1b, [gpu(0, 2.0, 2.2), gpu(1, 2.0, 2.2)])
    fp16 = fit.fits["fp16"]
    assert (fp16.status, fp16.placement, fp16.gpus) == (Status.DEGRADED, "multi-gpu", [0, 1])
    assert fit.fits["int8"].status is Status.SUPPORTED


def test_fits_total_but_not_free(llama_1b: MemoryEstimate) -> None:
    fp32 = fit_on_devices(llama_1b, [gpu(0, 2, 16)]).fits["fp32"]
    assert (fp32.status, fp32.placement) == (Status.DEGRADED, "needs-free-memory")
    assert "2.00 GiB free now" in fp32.reason


def test_does_not_fit(llama_1b: MemoryEstimate) -> None:
    fp32 = fit_on_devices(llama_1b, [gpu(0, 1, 2)]).fits["fp32"]
    assert (fp32.status, fp32.placement) == (Status.UNSUPPORTED, "none")
    assert "largest GPU 0 has 1.00 GiB free, 2.00 GiB total" in fp32.reason
    assert fp32.best is not None and fp32.best.max_seq_len is None  # not one token fits


def test_unknown_memory_gives_unknown_with_reason(llama_1b: MemoryEstimate) -> None:
    fit = fit_on_devices(llama_1b, [gpu(0, None, None)])
    fp16 = fit.fits["fp16"]
    assert fp16.status is Status.UNKNOWN
    assert "GPU 0 free memory unknown (NVML NotSupported)" in fp16.reason
    assert "GPU 0 total memory unknown (not reported)" in fp16.reason
    # Total known and roomy: the answer is "once freed", not unknown.
    assert fit_on_devices(llama_1b, [gpu(0, None, 80)]).fits["fp16"].placement == (
        "needs-free-memory"
    )


def test_no_gpu(llama_1b: MemoryEstimate) -> None:
    fp16 = fit_on_devices(llama_1b, []).fits["fp16"]
    assert fp16.status is Status.UNSUPPORTED
    assert fp16.reason.endswith("no GPU found")


def test_to_dict_is_json_and_rows(llama_1b: MemoryEstimate) -> None:
    fit = fit_on_devices(llama_1b, [gpu(0, 20, 24)])
    data = fit.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {
        "estimate",
        "workload",
        "margins",
        "max_memory",
        "fits",
        "device_plans",
        "warnings",
        "allocator",
    }
    assert data["allocator"]["variable"] is None  # torch's defaults unless one is passed
    assert data["margins"]["fragmentation_scale"] == 1.0
    fp16 = data["fits"]["fp16"]
    assert fp16["status"] == "supported"
    assert set(fp16["workload"]["parts"]) == {
        "weights",
        "kv_cache",
        "activations",
        "logits",
        "quantization_buffers",
        "allocator",
        "unmodelled_margin",
        "cuda_context",
    }
    assert fp16["workload"]["parts"]["unmodelled_margin"] == 0  # a modelled type
    assert fp16["workload"]["verdict"] == "estimated"
    assert sum(fp16["workload"]["parts"].values()) == fp16["workload"]["peak_bytes"]
    assert fp16["max_seq_len"] > 512 and fp16["max_batch_size"] > 1
    assert data["estimate"]["parameter_count"] == 1_100_048_384
    assert "meta_model" not in data["estimate"]
    rows = fit.rows()
    assert [row[0] for row in rows] == list(MODES)
    assert rows[1][2].startswith("one GPU (GPU 0); longest seq at batch 1: ")


def test_longest_sequence_and_largest_batch_are_the_edges(llama_1b: MemoryEstimate) -> None:
    work = Workload(4, 1024, 16)
    # On a roomy GPU the sequence stops at the model's 2048 positions, new tokens included.
    roomy = fit_on_devices(llama_1b, [gpu(0, 40, 40)], workload=work).fits["fp16"].best
    assert roomy is not None and roomy.max_seq_len == 2048 - 16
    fit = fit_on_devices(llama_1b, [gpu(0, 3.2, 16)], workload=work)
    best = fit.fits["fp16"].best
    assert best is not None and best.usable_bytes is not None
    assert best.max_seq_len is not None and best.max_batch_size is not None

    def peak(batch: int, seq: int) -> int:
        return estimate_workload(llama_1b, "fp16", Workload(batch, seq, 16)).peak_reserved_bytes

    assert peak(4, best.max_seq_len) <= best.usable_bytes < peak(4, best.max_seq_len + 1)
    assert peak(best.max_batch_size, 1024) <= best.usable_bytes
    assert peak(best.max_batch_size + 1, 1024) > best.usable_bytes


def test_max_memory_caps_the_fit(llama_1b: MemoryEstimate) -> None:
    roomy = [gpu(0, 70, 80), gpu(1, 70, 80)]
    fp16 = fit_on_devices(llama_1b, roomy, {0: 1024}, plan=False).fits["fp16"]
    assert (fp16.status, fp16.placement) == (Status.UNSUPPORTED, "none")
    assert "a budget of 1.00 KiB" in fp16.reason
    offload = fit_on_devices(llama_1b, roomy, {0: 1024, "cpu": 64 * GiB}, plan=False)
    assert offload.fits["fp16"].placement == "offload"
    assert offload.fits["fp16"].status is Status.DEGRADED
    only_gpu1 = fit_on_devices(llama_1b, roomy, {1: 20 * GiB}, plan=False).fits["fp16"]
    assert (only_gpu1.placement, only_gpu1.gpus) == ("single-gpu", [1])


def test_max_memory_for_a_missing_gpu_is_refused(llama_1b: MemoryEstimate) -> None:
    with pytest.raises(InputError, match=r"budget to GPU 7, but the judged machine has GPU 0:"):
        fit_on_devices(llama_1b, [gpu(0, 8, 8)], {7: GiB})
    with pytest.raises(InputError, match="has no GPU"):
        fit_on_devices(llama_1b, [], {0: GiB})


# ----------------------------------------------------------------------------- device maps


def test_device_map_spills_to_cpu_and_disk(tmp_path: Path) -> None:
    config = {**TINY_LLAMA, "num_hidden_layers": 8, "hidden_size": 256, "intermediate_size": 1024,
              "num_attention_heads": 8, "num_key_value_heads": 8}  # fmt: skip
    estimate = estimate_model_memory(write_model(tmp_path, config))
    # ~3.2 MiB per layer in fp16: a few layers on GPU 0, a few on cpu, the rest on disk.
    budget = parse_max_memory("0=8MiB,cpu=8MiB")
    fit = fit_on_devices(estimate, [gpu(0, 8, 8)], budget)
    assert fit.fits["fp16"].placement == "offload"
    fp16 = fit.device_plans["fp16"]
    assert list(fp16.devices) == ["0", "cpu", "disk"]
    assert all(v["modules"] > 0 and v["bytes"] > 0 for v in fp16.devices.values())
    assert fp16.offloaded
    assert sum(v["bytes"] for v in fp16.devices.values()) <= estimate.weights_bytes("fp16")
    assert not fp16.needs_fp32_cpu_offload
    assert fp16.device_map["model.layers.0"] == 0

    int8 = fit.device_plans["int8"]
    assert int8.max_memory == {0: int(8 * 2**20 * 0.9), "cpu": int(8 * 2**20 * 0.9)}
    assert int8.needs_fp32_cpu_offload
    assert "llm_int8_enable_fp32_cpu_offload=True" in int8.note
    # int8 layers are smaller: at least as many modules stay on the GPU as in fp16.
    gpu_layers = [k for k, v in int8.device_map.items() if v == 0 and k.startswith("model.layers")]
    fp16_layers = [k for k, v in fp16.device_map.items() if v == 0 and k.startswith("model.layers")]
    assert len(gpu_layers) >= len(fp16_layers)
    assert fit.device_plans["fastpath"].device_map == fp16.device_map
    assert json.loads(json.dumps(fit.to_dict()))["device_plans"]["int8"]["max_memory"]["0"] > 0


def test_device_map_whole_model_on_gpu(tmp_path: Path) -> None:
    estimate = estimate_model_memory(write_model(tmp_path, TINY_LLAMA), ["fp16"])
    plan = fit_on_devices(estimate, [gpu(0, 8, 8)], {0: 8 * GiB}).device_plans["fp16"]
    assert plan.device_map == {"": 0}
    assert plan.devices == {"0": {"bytes": plan.devices["0"]["bytes"], "modules": 1}}
    assert not plan.offloaded


def test_plan_from_estimate_read_back_without_model(tmp_path: Path) -> None:
    estimate = estimate_model_memory(write_model(tmp_path, TINY_LLAMA), ["fp16"])
    estimate.meta_model = None
    fit = fit_on_devices(estimate, [], {"cpu": GiB})
    assert fit.fits["fp16"].placement == "offload"
    plan = fit.device_plans["fp16"]
    assert plan.device_map == {"": "cpu"}


def test_import_does_not_load_torch() -> None:
    code = (
        "import sys, pytest_gpuinfer.probes.memory_fit; "
        "print(sorted(m for m in ('torch', 'transformers', 'accelerate') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

"""Tests that need a real NVIDIA GPU; skipped elsewhere. Run on the GPU machine.

Every mode x every tiny architecture on the GPU is in test_loading.py (it runs on the GPU
when there is one); here are the tests that only make sense with GPU memory.

The GPU is detected through NVML, so collecting this module never initialises CUDA.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_gpuinfer.probes.nvml import probe_nvml

_GPUS = probe_nvml().gpus
pytestmark = pytest.mark.skipif(not _GPUS, reason="needs an NVIDIA GPU (NVML found none)")


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pytest_gpuinfer.tiny_models import write_tiny_model

    return write_tiny_model("llama", tmp_path_factory.mktemp("gpu-models") / "llama")


def test_int8_with_fp32_cpu_offload_plans_a_split_map(llama_dir: Path) -> None:
    from pytest_gpuinfer.assertions import assert_device_map
    from pytest_gpuinfer.loading import load_model, release_memory

    loaded = load_model(
        llama_dir,
        "int8",
        device_map="auto",
        max_memory={0: "150KiB", "cpu": "2GiB"},
        llm_int8_enable_fp32_cpu_offload=True,
    )
    try:
        assert loaded.device_map is not None
        placed = set(loaded.device_map.values())
        assert "cpu" in placed and any(d.startswith("cuda") or d == "0" for d in placed), placed
        assert loaded.quantized_layers > 0
        assert_device_map(loaded.model, loaded.device_map)
        assert loaded.tokenizer is not None
        inputs = loaded.tokenizer("hello", return_tensors="pt").to(loaded.input_device)
        loaded.model.generate(**inputs, max_new_tokens=3, do_sample=False)
    finally:
        del loaded
        release_memory()


def _write_mid_llama(directory: Path, seed: int = 0) -> Path:
    """About 110M parameters (220 MB in fp16): large enough to measure memory by."""
    from pytest_gpuinfer.tiny_models import write_tiny_model

    sizes = {"vocab_size": 32000, "hidden_size": 1024, "intermediate_size": 2816}
    sizes |= {"num_hidden_layers": 8, "num_attention_heads": 16, "num_key_value_heads": 4}
    return write_tiny_model("llama", directory, seed=seed, config_overrides=sizes)


@pytest.fixture(scope="module")
def mid_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_mid_llama(tmp_path_factory.mktemp("mid") / "llama-110m")


def test_release_returns_gpu_memory_within_one_percent(mid_llama: Path) -> None:
    import torch

    from pytest_gpuinfer.loading import ModelCache, release_memory

    release_memory()
    before_allocated = torch.cuda.memory_allocated()
    before_free, _ = torch.cuda.mem_get_info()
    cache = ModelCache()
    loaded = cache.get(mid_llama, "fp16", device_map="cuda:0")
    size = torch.cuda.memory_allocated() - before_allocated
    assert size > 100e6, size
    assert cache.get(mid_llama, "fp16", device_map="cuda:0") is loaded
    assert cache.loads == 1
    del loaded
    cache.clear()
    after_allocated = torch.cuda.memory_allocated()
    after_free, _ = torch.cuda.mem_get_info()
    record = {
        "model_bytes": size,
        "allocated_before": before_allocated,
        "allocated_after": after_allocated,
        "free_before": before_free,
        "free_after": after_free,
    }
    print("GPUINFER_MEMORY " + json.dumps(record))
    assert abs(after_allocated - before_allocated) <= 0.01 * size, record
    assert abs(after_free - before_free) <= 0.01 * before_free, record


def test_cuda_oom_during_load_fails_only_that_load(
    mid_llama: Path, request: pytest.FixtureRequest
) -> None:
    import torch

    if hasattr(request.config, "workerinput"):
        pytest.skip("fills the GPU on purpose: run without xdist (-n 0) so no other test loads")
    from pytest_gpuinfer.loading import ModelLoadOOM, load_model, release_memory

    release_memory()
    free, _ = torch.cuda.mem_get_info()
    before = torch.cuda.memory_allocated()
    # Leave ~64 MiB: a 220 MB fp16 model cannot fit.
    blocker: Any = torch.empty(free - 64 * 2**20, dtype=torch.uint8, device="cuda")
    # Measured, not computed from numel(): the allocator rounds a block's size.
    with_blocker = torch.cuda.memory_allocated()
    try:
        with pytest.raises(ModelLoadOOM) as info:
            load_model(mid_llama, "fp16", device_map="cuda:0")
        # Still holding the exception (and its traceback): it must hold no CUDA memory.
        residue = torch.cuda.memory_allocated() - with_blocker
        message = str(info.value)
        assert "needs about" in message and "free at load time: cuda:0" in message, message
        assert info.value.needed_bytes is not None and info.value.needed_bytes > 64 * 2**20
        assert residue == 0, f"{residue:,} bytes stay allocated after the refused load"
    finally:
        del blocker
        release_memory()
    # The session goes on: the same load now succeeds.
    loaded = load_model(mid_llama, "fp16", device_map="cuda:0")
    assert loaded.devices == ("cuda:0",)
    del loaded
    release_memory()
    after = torch.cuda.memory_allocated()
    assert after == before, f"{after - before:,} bytes stay allocated after release_memory()"


def test_cache_releases_the_least_recently_used_model_when_gpu_memory_is_short(
    mid_llama: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    import torch

    from pytest_gpuinfer.loading import ModelCache, estimate_load_bytes, release_memory

    if hasattr(request.config, "workerinput"):
        pytest.skip("fills the GPU on purpose: run without xdist (-n 0) so no other test loads")
    second = _write_mid_llama(tmp_path / "second", seed=1)
    third = _write_mid_llama(tmp_path / "third", seed=2)
    release_memory()
    cache = ModelCache()
    cache.get(mid_llama, "fp16", device_map="cuda:0")
    cache.get(second, "fp16", device_map="cuda:0")
    cache.get(mid_llama, "fp16", device_map="cuda:0")  # a hit: `second` is now the oldest
    needed = estimate_load_bytes(third, "fp16")
    assert needed is not None
    free, _ = torch.cuda.mem_get_info()
    # Leave half of what the third model needs: releasing one cached model makes room.
    blocker: Any = torch.empty(free - needed // 2, dtype=torch.uint8, device="cuda")
    try:
        cache.get(third, "fp16", device_map="cuda:0")
        assert cache.evictions == 1
        assert cache.loads == 3
        kept = {key[0] for key in cache}
        assert str(second.resolve()) not in kept and len(kept) == 2, kept
    finally:
        del blocker
        cache.clear()
        release_memory()


def _visible_gpus() -> int:
    import torch

    return int(torch.cuda.device_count())


def test_default_placement_is_one_gpu_and_auto_spreads(llama_dir: Path) -> None:
    """load_model's default puts a model on the first visible GPU, on any host; "auto"
    is transformers' own placement (every GPU on a multi-GPU host)."""
    from pytest_gpuinfer.loading import load_model, release_memory

    loaded = load_model(llama_dir, "fp16")
    try:
        assert loaded.devices == ("cuda:0",), loaded.devices
    finally:
        del loaded
        release_memory()
    if _visible_gpus() < 2:
        return
    spread = load_model(llama_dir, "fp16", device_map="auto")
    try:
        assert spread.device_map is not None
        assert {"cuda:0", "cuda:1"} <= set(spread.devices), spread.devices
    finally:
        del spread
        release_memory()


def _write_tinyllama(directory: Path) -> Path:
    """1.1B parameters shaped like TinyLlama (2.2 GB in fp16): its int8 load (1.2 GB)
    needs both GPUs of the seed's max_memory={0: "1GB", 1: "2GB"}."""
    from pytest_gpuinfer.tiny_models import TINYLLAMA_1B, write_tiny_model

    return write_tiny_model("llama", directory, dtype="float16", config_overrides=TINYLLAMA_1B)


def test_seed_multi_gpu_int8_example(tmp_path: Path) -> None:
    """The seed document's multi-GPU LLM.int8 load, placement and generation checked."""
    if _visible_gpus() < 2:
        pytest.skip("needs 2 visible GPUs (the seed's max_memory names GPU 0 and GPU 1)")
    import torch

    from pytest_gpuinfer.assertions import (
        assert_device_map,
        assert_generation_close,
        assert_logits_close,
    )
    from pytest_gpuinfer.loading import load_model, release_memory

    model_dir = _write_tinyllama(tmp_path / "tinyllama")
    reference = load_model(model_dir, "fp16", device_map="cuda:0")
    candidate = load_model(model_dir, "int8", device_map="auto", max_memory={0: "1GB", 1: "2GB"})
    try:
        assert candidate.device_map is not None
        placed = set(candidate.device_map.values())
        assert {"cuda:0", "cuda:1"} <= placed, placed
        assert candidate.quantized_layers == 22 * 7
        assert_device_map(candidate.model, candidate.device_map)
        # A random model has no confident continuation to agree on: compare next-token
        # distributions (log-probabilities) over a batch of token ids instead.
        ids = torch.randint(0, 32000, (2, 64), generator=torch.Generator().manual_seed(0))
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        comparison = assert_logits_close(reference, candidate, inputs)
        generations = assert_generation_close(
            reference, candidate, ["hello world", "The quick brown fox"], max_new_tokens=8
        )
        record: dict[str, Any] = {"placed": sorted(placed), "logits": vars(comparison)}
        record["first_divergence"] = [g.first_divergence for g in generations]
        print("GPUINFER_MULTI_GPU " + json.dumps(record, default=str))
    finally:
        del reference, candidate
        release_memory()

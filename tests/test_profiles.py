from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_gpuinfer.probes.errors import InputError
from pytest_gpuinfer.probes.profiles import BUILTIN_PROFILES, load_profile

REQUIRED = {"k80", "p100", "p40", "v100", "t4", "gtx1660", "a10", "a100-40gb", "a100-80gb"}
REQUIRED |= {"l4", "rtx3090", "rtx4090", "h100", "h200", "b200"}


def test_builtin_profiles_cover_the_issue_list() -> None:
    assert set(BUILTIN_PROFILES) >= REQUIRED
    for profile in BUILTIN_PROFILES.values():
        assert profile.memory_bytes > 4 * 2**30
        assert profile.memory_bandwidth_gb_per_s > 100
        assert profile.gpu_count >= 1


def test_gtx1660_has_no_tensor_cores_and_t4_has() -> None:
    assert load_profile("gtx1660").gpus()[0].has_tensor_cores is False
    assert load_profile("T4").gpus()[0].has_tensor_cores is True


def test_inline_software_override() -> None:
    profile = load_profile("t4@bitsandbytes=0.36.0,transformers=4.29.2")
    assert profile.software == {"bitsandbytes": "0.36.0", "transformers": "4.29.2"}
    assert profile.compute_capability == (7, 5)


def test_json_profile_file_with_base(tmp_path: Path) -> None:
    path = tmp_path / "old-t4.json"
    path.write_text(
        json.dumps({"base": "t4", "gpu_count": 2, "software": {"bitsandbytes": "0.36.0"}})
    )
    profile = load_profile(path)
    assert (profile.name, profile.gpu_count, profile.compute_capability) == ("t4", 2, (7, 5))
    assert profile.software == {"bitsandbytes": "0.36.0"}
    assert len(profile.gpus()) == 2


def test_toml_profile_file(tmp_path: Path) -> None:
    path = tmp_path / "lab.toml"
    path.write_text(
        'name = "lab-a6000"\ngpu_name = "NVIDIA RTX A6000"\ncompute_capability = "8.6"\n'
        'memory = "48GiB"\nmemory_bandwidth_gb_per_s = 768\ntorch_cuda = "12.8"\n'
    )
    profile = load_profile(str(path))
    assert profile.name == "lab-a6000"
    assert profile.memory_bytes == 48 * 2**30
    assert profile.torch_cuda == "12.8"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a table/object, got list"),
        ('{"gpu_name": "X"}', "missing key 'compute_capability'"),
        ('{"base": "t4", "colour": "red"}', "unknown key 'colour'"),
        ('{"base": "t5"}', "base 't5' is not a built-in profile"),
        ('{"base": "t4", "compute_capability": "seven"}', "compute capability 'seven'"),
        ('{"base": "t4", "memory": "16G"}', "'16G'"),
        ('{"base": "t4", "gpu_count": 0}', "'gpu_count' must be an integer >= 1, got 0"),
        ('{"base": "t4", "software": {"bitsandbytes": 36}}', "must be a string"),
        ('{"base": "t4", "software": {"bitsandbytes": "banana"}}', "'banana'"),
        ('{"base": "t4", "torch_cuda": "cu121"}', "'cu121'"),
    ],
)
def test_bad_profile_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InputError) as info:
        load_profile(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_profile_name_lists_the_choices() -> None:
    with pytest.raises(InputError, match=r"unknown profile 'z80'; expected one of: k80, p100"):
        load_profile("z80")


def test_missing_profile_file() -> None:
    with pytest.raises(InputError, match=r"profile file /nonexistent/p\.json does not exist"):
        load_profile("/nonexistent/p.json")


def test_bad_inline_override() -> None:
    with pytest.raises(InputError, match="override 'bitsandbytes' is not of the form"):
        load_profile("t4@bitsandbytes")


ACCEPTED = "accepted names: accelerate, bitsandbytes, flash-attn, optimum, torch, transformers"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("t4@bitsandbyte=0.36.0", "unknown package 'bitsandbyte'; " + ACCEPTED),
        ("t4@numpy=1.26.0", "unknown package 'numpy'; " + ACCEPTED),
        ("t4@bitsandbytes=banana", "version 'banana' of 'bitsandbytes' is not a valid version"),
        ("t4@bitsandbytes=0.36.0,bitsandbytes=0.37.0", "'bitsandbytes' is given twice"),
        ("t4@bitsandbytes=0.36.0,BitsAndBytes=0.37.0", "'bitsandbytes' is given twice"),
        ("t4@torch_cuda=12.8", "'torch_cuda' is not a package; name torch's CUDA build"),
        ("t4@torch=2.6.0+git1234", "only torch takes one: +cpu or +cuXYZ"),
        ("t4@transformers=4.48.3+cu118", "has a local label"),
        ("t4@", "nothing after '@'"),
    ],
)
def test_override_errors_name_the_value_and_the_accepted_names(spec: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        load_profile(spec)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_torch_override_carries_its_cuda_build() -> None:
    assert load_profile("p100@torch=2.8.0+cu128").torch_cuda == "12.8"
    assert load_profile("p100@torch=2.8.0").torch_cuda is None
    assert load_profile("p100@torch=2.8.0").assumes_cuda_torch
    cpu = load_profile("p100@torch=2.8.0+cpu")
    assert cpu.torch_cuda is None and not cpu.assumes_cuda_torch
    assert load_profile("t4@flash_attn=2.3.3").software == {"flash-attn": "2.3.3"}


def test_file_torch_cuda_must_agree_with_the_torch_label(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(
        json.dumps({"base": "t4", "torch_cuda": "12.6", "software": {"torch": "2.6.0+cu118"}})
    )
    with pytest.raises(InputError, match=r"disagrees with torch '2\.6\.0\+cu118'"):
        load_profile(path)
    path.write_text(json.dumps({"base": "t4", "software": {"bitsandbyte": "0.36.0"}}))
    with pytest.raises(InputError, match="unknown package 'bitsandbyte'"):
        load_profile(path)


def test_current_parts_have_sourced_builtin_profiles() -> None:
    from pytest_gpuinfer.probes.gpu_profiles import CURRENT_SPECS
    from pytest_gpuinfer.probes.profiles import BUILTIN_PROFILES

    names = {spec.name for spec in CURRENT_SPECS}
    assert {"rtx5090", "rtx5080", "l40s", "gh200", "b300", "jetson-agx-orin"} <= names
    assert "b200" in BUILTIN_PROFILES  # the older table keeps its rows and behaviour
    for spec in CURRENT_SPECS:
        profile = BUILTIN_PROFILES[spec.name]
        assert profile.figures_source == spec.source, spec.name
        assert "datasheet" in spec.source or "spec page" in spec.source, spec.name
        assert profile.platform == spec.platform
        assert profile.gpus()[0].compute_capability == tuple(
            int(p) for p in spec.compute_capability.split(".")
        )
    assert BUILTIN_PROFILES["gh200"].platform == "aarch64"
    assert BUILTIN_PROFILES["jetson-agx-orin"].platform == "tegra"
    assert (
        BUILTIN_PROFILES["h100"].platform == "x86_64"
        and not BUILTIN_PROFILES["h100"].figures_source
    )

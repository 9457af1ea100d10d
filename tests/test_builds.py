"""The build tables and their lookups, and the installed torch's arch list (read and cached)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_gpuinfer.probes import builds, coverage
from pytest_gpuinfer.probes.architectures import architecture_name
from pytest_gpuinfer.probes.facts import Facts
from pytest_gpuinfer.probes.hf_calls import plan_fastpath
from pytest_gpuinfer.probes.report import DriverInfo, GPUInfo, SoftwareStack, Status
from pytest_gpuinfer.probes.rules import judge
from pytest_gpuinfer.probes.software import cached_arch_list, verify_stack

DRIVER = DriverInfo(driver_version="580.65.06", cuda_driver_version="13.0")


def gpu(cc: tuple[int, int], name: str = "Test GPU") -> GPUInfo:
    return GPUInfo(index=0, name=name, compute_capability=cc, architecture=architecture_name(cc))


def software(torch: str, cuda: str | None = None, **more: str | None) -> SoftwareStack:
    packages: dict[str, str | None] = {
        "torch": torch,
        "transformers": "5.23.0",
        "accelerate": "1.15.0",
        "bitsandbytes": "0.50.2",
        "optimum": None,
        "flash-attn": None,
    }
    packages.update({k.replace("_", "-"): v for k, v in more.items()})
    return SoftwareStack(
        python="3.12",
        platform="Linux-x86_64",
        packages=packages,
        torch_cuda=cuda,
        assumed_torch_build=cuda is None,
    )


@pytest.mark.parametrize(
    ("targets", "cc", "expected"),
    [
        (["sm_60"], (6, 1), "sass"),  # same major, later minor
        (["sm_61"], (6, 0), None),  # never an earlier minor
        (["sm_90"], (10, 0), None),  # never another major
        (["sm_90a"], (9, 0), "sass"),
        (["sm_86", "sm_90a"], (9, 1), None),  # arch-specific code runs on 9.0 only
        (["sm_90", "compute_90"], (10, 0), "ptx"),
        (["compute_120"], (12, 0), "ptx"),
        (["sm_120"], (12, 1), "sass"),
    ],
)
def test_binary_compatibility(
    targets: list[str], cc: tuple[int, int], expected: str | None
) -> None:
    assert builds.coverage(targets, cc) == expected


def test_torch_releases_are_ordered_and_sourced() -> None:
    releases = [tuple(map(int, r.release.split("."))) for r in builds.TORCH_RELEASES]
    assert releases == sorted(releases)
    assert all(r.source and r.builds for r in builds.TORCH_RELEASES)
    assert all(
        builds.parse_target(t)
        for r in builds.TORCH_RELEASES
        for ts in r.builds.values()
        for t in ts
    )


def test_best_build_and_the_last_one_for_kepler() -> None:
    release_2_13, _ = builds.torch_release("2.13.0+cpu")
    assert release_2_13 is not None
    assert builds.best_official_build(release_2_13, (6, 0)) == ("12.6", "sass")
    assert builds.best_official_build(release_2_13, (9, 0)) == ("13.2", "sass")
    assert builds.best_official_build(release_2_13, (3, 7)) is None
    assert builds.last_release_covering((3, 7)) == ("2.7", "11.8")
    assert builds.cuda_from_local_label("2.6.0+cu118") == "11.8"
    assert builds.cuda_from_local_label("2.6.0+cu130") == "13.0"
    assert builds.cuda_from_local_label("2.6.0") is None
    assert builds.is_official_torch_version("2.6.0+cu126")
    assert not builds.is_official_torch_version("2.5.0a0+872d972e41.nv24.08")


def test_bnb_library_selection() -> None:
    from packaging.version import Version

    row_050 = builds.bnb_release(Version("0.50.2"))
    row_049 = builds.bnb_release(Version("0.49.2"))
    assert row_050 is not None and row_049 is not None
    ampere = (8, 0)

    def cuda_of(row: builds.BnbRelease, cuda: str) -> str | None:
        lib = builds.bnb_library_for(row, cuda, ampere)
        return None if lib is None else lib.cuda

    assert cuda_of(row_050, "12.9") == "12.8"  # nearest older, same major
    # nothing older in 12.x: 0.50's loader takes the nearest newer one of the same major
    # (bitsandbytes 0.50.2 cextension.py get_cuda_bnb_library_path, priority 3)
    assert cuda_of(row_050, "12.0") == "12.1"
    assert cuda_of(row_050, "11.7") == "11.8"
    assert cuda_of(row_049, "13.2") is None  # exact only
    lib_130 = builds.bnb_library_for(row_050, "13.0", ampere)
    lib_126 = builds.bnb_library_for(row_050, "12.6", ampere)
    assert lib_130 is not None and lib_126 is not None
    assert lib_130.targets[0] == "sm_75"
    assert lib_126.targets[0] == "sm_60"


def test_a_custom_torch_build_is_unknown_until_verify_reads_it() -> None:
    nv = software("2.5.0a0+872d972e41.nv24.08", "12.6", transformers="4.48.3")
    verdict = judge([gpu((9, 0))], nv, driver=DRIVER)["fp32"]
    assert verdict.status is Status.UNKNOWN
    assert "is not an official build" in verdict.reason and "--verify" in verdict.reason
    nv.torch_arch_list = ["sm_80", "sm_86", "sm_90"]
    assert judge([gpu((9, 0))], nv, driver=DRIVER)["fp32"].status is Status.SUPPORTED


def test_a_torch_newer_than_the_table_is_judged_by_its_newest_row() -> None:
    future = software("2.15.0")
    h100 = judge([gpu((9, 0))], future, simulated=True)["fp32"]
    assert h100.status is Status.SUPPORTED
    assert "newer than the build table" in h100.reason
    p100 = judge([gpu((6, 0))], future, simulated=True)["fp32"]
    assert p100.status is Status.UNKNOWN
    assert "only the CUDA 12.6 build targets 6.0" in p100.reason


def test_assumed_build_prefers_one_bitsandbytes_ships_a_library_for(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # No PyPI wheel read for 2.7.0 (an empty data folder): the best official build is assumed.
    monkeypatch.setattr(coverage, "DATA_DIR", tmp_path)
    old_bnb = software("2.7.0", transformers="4.48.3", bitsandbytes="0.45.0")
    facts = Facts(old_bnb, gpu((8, 0)), simulated=True)
    build = facts.torch_build
    assert build is not None and build.cuda == "12.6"  # 0.45.0 has no CUDA 12.8 library
    assert "assumed" in facts.torch_label


def test_a_plain_torch_version_is_the_pypi_wheel_where_it_drives_the_gpu() -> None:
    # torch 2.5.1's x86_64 wheel on PyPI pins nvidia-cuda-runtime-cu12==12.4.127.
    facts = Facts(software("2.5.1", transformers="4.48.3"), gpu((8, 0)), simulated=True)
    build = facts.torch_build
    assert build is not None and build.cuda == "12.4" and build.how == "pypi"
    assert "the PyPI wheel for x86_64" in facts.torch_label
    # torch 2.8.0's PyPI wheel (cu128) has no sm_60: a P100 is judged by the cu126 build.
    p100 = Facts(software("2.8.0", transformers="4.48.3"), gpu((6, 0)), simulated=True)
    assert p100.torch_build is not None and p100.torch_build.cuda == "12.6"
    assert "assumed" in p100.torch_label


def test_fastpath_without_a_model_does_not_promise_bettertransformer_to_llama() -> None:
    legacy = software("2.5.1", "12.4", transformers="4.48.3", optimum="1.24.0")
    plan = plan_fastpath(legacy, gpu((8, 0)))
    assert plan.implementation == "bettertransformer"
    assert "native SDPA for falcon, gpt_bigcode, llama, whisper" in plan.reason
    verdict = judge([gpu((8, 0))], legacy)["fastpath"]
    assert (
        verdict.resolves_to is not None and "attn_implementation='sdpa' for" in verdict.resolves_to
    )


@pytest.mark.parametrize(
    ("transformers", "flash", "cc", "implementation"),
    [
        ("5.23.0", "2.3.3", (8, 0), "flash_attention_2"),
        ("5.23.0", "2.3.2", (8, 0), "sdpa"),  # transformers 5 ignores older flash-attn
        ("4.48.3", "2.3.2", (8, 0), "flash_attention_2"),
        ("5.23.0", "2.8.3", (7, 5), "sdpa"),  # flash-attn 2 is Ampere+
    ],
)
def test_flash_attn_floors(
    transformers: str, flash: str, cc: tuple[int, int], implementation: str
) -> None:
    stack = software("2.11.0", "13.0", transformers=transformers, flash_attn=flash)
    assert plan_fastpath(stack, gpu(cc)).implementation == implementation


def test_sdpa_flash_kernel_covered_turing_until_torch_2_1() -> None:
    assert "flash" in plan_fastpath(software("2.1.2", "12.1"), gpu((7, 5))).kernels
    assert "flash" not in plan_fastpath(software("2.2.0", "12.1"), gpu((7, 5))).kernels


def test_arch_list_cache_is_read_without_importing_torch(tmp_path: Path) -> None:
    stack = software("2.11.0+cu130", "13.0")
    env = {"GPUINFER_CACHE_DIR": str(tmp_path)}
    assert cached_arch_list(stack, environ=env) is None
    # What --verify's child writes on a GPU machine.
    from pytest_gpuinfer.probes.software import _arch_cache_key

    (tmp_path / f"torch-{_arch_cache_key(stack)}.json").write_text(
        json.dumps({"arch_list": ["sm_80", "sm_90"]})
    )
    assert cached_arch_list(stack, environ=env) == ["sm_80", "sm_90"]
    assert cached_arch_list(software("2.11.0+cpu", None), environ=env) is None


def test_verify_child_reports_no_arch_list_without_a_gpu(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    stack = software("2.11.0+cu130", "13.0", bitsandbytes=None)
    # No GPU for the child, on any machine: an empty CUDA_VISIBLE_DEVICES hides every device.
    env = {"GPUINFER_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": ""}
    import os

    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    check, arch = verify_stack(stack, device="cuda", environ=env)
    assert arch is None  # no CUDA device here: nothing read, nothing cached
    assert check.state == "failed" and "not installed" in check.detail
    assert not list(tmp_path.glob("torch-*.json"))

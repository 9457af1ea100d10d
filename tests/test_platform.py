"""The platform: x86_64, aarch64 servers (GH200) and Jetson (tegra), live and in profiles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_gpuinfer.probes import platforms
from pytest_gpuinfer.probes.architectures import architecture_name
from pytest_gpuinfer.probes.errors import InputError
from pytest_gpuinfer.probes.facts import Facts
from pytest_gpuinfer.probes.platform_info import machine_platform
from pytest_gpuinfer.probes.probe import probe
from pytest_gpuinfer.probes.profiles import load_profile
from pytest_gpuinfer.probes.report import GPUInfo, Report, SoftwareStack, Status
from pytest_gpuinfer.probes.rule import UNCONFIRMED
from pytest_gpuinfer.probes.rules_platform import PLATFORM_RULES

HF = {"transformers": "4.56.2", "accelerate": "1.10.0"}


def test_the_live_platform_is_read_from_the_machine_and_the_device_tree(tmp_path: Path) -> None:
    assert machine_platform("x86_64", tmp_path) == "x86_64"
    assert machine_platform("AMD64", tmp_path) == "x86_64"
    assert machine_platform("aarch64", tmp_path) == "aarch64"
    tree = tmp_path / "proc" / "device-tree"
    tree.mkdir(parents=True)
    (tree / "compatible").write_bytes(b"nvidia,p3737-0000+p3701-0005\x00nvidia,tegra234\x00")
    assert machine_platform("aarch64", tmp_path) == "tegra"
    jetson = tmp_path / "jetson"
    (jetson / "etc").mkdir(parents=True)
    (jetson / "etc" / "nv_tegra_release").write_text("# R36 (release), REVISION: 4.0\n")
    assert machine_platform("arm64", jetson) == "tegra"
    assert machine_platform("ppc64le", tmp_path) == "ppc64le"


def test_a_live_report_carries_this_machines_platform() -> None:
    report = probe(modes=["fp32"])
    assert report.platform == machine_platform()
    assert Report.from_dict(report.to_dict()).platform == report.platform


def test_a_profile_file_takes_a_platform(tmp_path: Path) -> None:
    path = tmp_path / "gh.json"
    path.write_text(json.dumps({"base": "h100", "platform": "aarch64"}), encoding="utf-8")
    assert load_profile(path).platform == "aarch64"
    assert load_profile("h100").platform == "x86_64"
    assert load_profile("gh200").platform == "aarch64"
    assert load_profile("jetson-orin").platform == "tegra"
    path.write_text(json.dumps({"base": "h100", "platform": "arm"}), encoding="utf-8")
    with pytest.raises(InputError, match=r"'platform' must be one of: x86_64, aarch64, tegra"):
        load_profile(path)


def test_a_jetpack_torch_version_is_accepted_and_recognised() -> None:
    profile = load_profile("jetson-agx-orin@torch=2.5.0a0+872d972e41.nv24.08")
    assert platforms.is_jetpack_build(profile.software["torch"])
    assert not platforms.is_jetpack_build("2.5.1+cu124")
    with pytest.raises(InputError, match="local label"):
        load_profile("h100@torch=2.5.0+git1234")


def test_the_table_is_read_from_the_wheels_with_provenance() -> None:
    table = platforms.table()
    assert table["schema"] == "pytest-gpuinfer/torch-platforms"
    assert table["generated_by"] == "scripts/generate_torch_platforms.py"
    for version, row in table["torch"].items():
        assert set(row) == {"x86_64", "aarch64"}, version
        for entry in row.values():
            assert entry["wheel"].startswith(f"torch-{version}")
            assert (entry["cuda"] is None) is (entry["line"] is None)
    aarch64 = {v: r["aarch64"]["cuda"] for v, r in table["torch"].items()}
    assert aarch64["2.10.0"] is None and aarch64["2.11.0"] == "13.0"
    assert all(s["source"].startswith("https://github.com/") for s in table["stated"])
    assert platforms.bnb_first_with("aarch64") == "0.46.0"


def _facts(platform: str, **packages: str) -> Facts:
    cuda = packages.pop("torch_cuda", None)
    software = SoftwareStack(
        python="3.12.3",
        platform="Linux-aarch64",
        packages={**HF, **packages},
        torch_cuda=cuda,
        assumed_torch_build=cuda is None,
    )
    gpu = GPUInfo(index=0, name="NVIDIA GH200 480GB", compute_capability=(9, 0),
                  architecture=architecture_name((9, 0)))  # fmt: skip
    return Facts(software, gpu, simulated=True, platform=platform)


# (rule, facts that fire it, facts where it holds or does not apply)
CASES = {
    "aarch64-wheel-is-cuda-build": (
        _facts("aarch64", torch="2.4.0"),
        _facts("aarch64", torch="2.8.0+cu128", torch_cuda="12.8"),
    ),
    "aarch64-build-not-tabulated": (
        _facts("aarch64", torch="2.6.0"),
        _facts("aarch64", torch="2.11.0"),
    ),
    "jetson-needs-jetpack-torch": (
        _facts("tegra", torch="2.5.1"),
        _facts("tegra", torch="2.5.0a0+872d972e41.nv24.08"),
    ),
    "jetpack-torch-not-tabulated": (
        _facts("tegra", torch="2.5.0a0+872d972e41.nv24.08"),
        _facts("tegra", torch="2.5.1"),
    ),
    "bnb-aarch64-wheel": (
        _facts("aarch64", torch="2.8.0+cu128", torch_cuda="12.8", bitsandbytes="0.45.5"),
        _facts("aarch64", torch="2.8.0+cu128", torch_cuda="12.8", bitsandbytes="0.46.0"),
    ),
    "jetson-bnb-registry-wheel": (
        _facts("tegra", torch="2.5.1", bitsandbytes="0.46.1"),
        _facts("aarch64", torch="2.8.0+cu128", torch_cuda="12.8", bitsandbytes="0.46.1"),
    ),
}


def test_every_platform_rule_is_shown_at_its_boundary() -> None:
    assert set(CASES) == {r.id for r in PLATFORM_RULES}


@pytest.mark.parametrize("rule", PLATFORM_RULES, ids=lambda r: r.id)
def test_platform_rule_fires_and_holds(rule: object) -> None:
    (row,) = [r for r in PLATFORM_RULES if r is rule]
    fires, holds = CASES[row.id]
    finding = row.evaluate(fires)
    assert finding is not None and finding.status is row.otherwise, row.id
    assert finding.message.startswith(row.requirement if row.confirmed else UNCONFIRMED)
    assert finding.source == row.source and finding.confirmed is row.confirmed
    assert row.evaluate(holds) is None


def test_x86_64_is_judged_as_before() -> None:
    facts = _facts("x86_64", torch="2.4.0")
    assert all(rule.evaluate(facts) is None for rule in PLATFORM_RULES)
    assert facts.torch_build is not None and facts.torch_build.cuda == "12.1"


def test_a_gh200_verdict_names_what_it_assumes() -> None:
    verdict = probe(
        "gh200@torch=2.8.0+cu128,transformers=4.56.2,accelerate=1.10.0,bitsandbytes=0.46.0",
        modes=["int8"],
    ).verdicts["int8"]
    assert verdict.status is Status.SUPPORTED, verdict.reason
    assert any("for aarch64 assumed to target what its x86_64 build does" in a
               for a in verdict.assumptions)  # fmt: skip
    assert any("aarch64 libraries assumed" in a for a in verdict.assumptions)

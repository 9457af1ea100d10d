"""What the fastpath really resolves to, per transformers era x flash-attn version x GPU.

Every expectation below follows from a fact in probes/data/fastpath.json (read from the
transformers wheels and flash-attn sdists); the boundary tests walk the floors in that file
rather than restating them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from packaging.version import Version

from pytest_gpuinfer.loading.plan import plan_load
from pytest_gpuinfer.probes import fastpath_facts
from pytest_gpuinfer.probes.hf_calls import FastpathPlan, plan_fastpath
from pytest_gpuinfer.probes.probe import probe
from pytest_gpuinfer.probes.report import Verdict

NEWEST_5 = max(fastpath_facts.covered()["transformers"], key=Version)


def _plan(profile: str | Path, model_type: str | None = None) -> FastpathPlan:
    report = probe(profile, modes=["fastpath"])
    return plan_fastpath(report.software, report.gpus[0], model_type)


def _verdict(profile: str | Path) -> Verdict:
    return probe(profile, modes=["fastpath"]).verdicts["fastpath"]


@pytest.fixture()
def rtx5090(tmp_path: Path) -> Path:
    """Consumer Blackwell (12.0), torch 2.7 cu128, flash-attn 2.8.3 (the release reported)."""
    path = tmp_path / "rtx5090.json"
    path.write_text(
        json.dumps(
            {
                "name": "rtx5090",
                "gpu_name": "NVIDIA GeForce RTX 5090",
                "compute_capability": "12.0",
                "memory": "32607MiB",
                "memory_bandwidth_gb_per_s": 1792,
                "software": {
                    "torch": "2.7.0+cu128",
                    "transformers": "4.57.1",
                    "flash-attn": "2.8.3",
                },
            }
        ),
        encoding="utf-8",
    )
    return path


def test_4_34_runs_flash_attention_through_use_flash_attention_2() -> None:
    profile = "a100@torch=2.1.2,transformers=4.34.1,flash-attn=2.3.3,accelerate=0.24.0"
    plan = _plan(profile)
    assert (plan.implementation, plan.keyword) == ("flash_attention_2", "use_flash_attention_2")
    verdict = _verdict(profile)
    assert verdict.status.value == "supported"
    assert verdict.resolves_to == "use_flash_attention_2=True"


def test_4_34_plan_gives_the_loader_the_boolean_switch() -> None:
    report = probe(
        "a100@torch=2.1.2,transformers=4.34.1,flash-attn=2.3.3,accelerate=0.24.0",
        modes=["fastpath"],
    )
    plan = plan_load(
        "fastpath",
        report=report,
        options={},
        kwargs={},
        on_gpu=True,
        model_type="llama",
        model_class=None,
    )
    assert plan.kwargs == {"use_flash_attention_2": True}
    assert plan.attention == "flash_attention_2"


def test_4_40_refuses_flash_attn_below_2_1_and_names_sdpa() -> None:
    verdict = _verdict("a100@torch=2.3.0,transformers=4.40.2,flash-attn=2.0.9")
    assert verdict.status.value == "supported"
    assert verdict.resolves_to is not None
    assert verdict.resolves_to.startswith("attn_implementation='sdpa'")
    assert "flash-attn 2.0.9 is below" in verdict.reason
    assert "utils/import_utils.py:" in verdict.reason  # the line the floor was read from


def test_5_x_refuses_flash_attn_below_its_own_floor() -> None:
    tf = fastpath_facts.transformers_release(NEWEST_5)
    assert tf is not None
    floor = fastpath_facts.flash_floor(tf)
    assert floor is not None and Version(floor[1]) > Version("2.1.0")  # 5.x raised it
    below = _below(floor[1])
    plan = _plan(f"a100@transformers={NEWEST_5},flash-attn={below}")
    assert plan.implementation == "sdpa"
    assert f"below transformers {NEWEST_5}'s floor" in plan.reason
    assert _plan(f"a100@transformers={NEWEST_5},flash-attn={floor[1]}").implementation == (
        "flash_attention_2"
    )


def test_rtx5090_with_flash_attn_runs_sdpa(rtx5090: Path) -> None:
    plan = _plan(rtx5090)
    assert plan.implementation == "sdpa"
    assert "no kernel for NVIDIA GeForce RTX 5090 (12.0)" in plan.reason
    assert "sm_80, sm_90 kernels only" in plan.reason  # the cu12 wheel, built with 12.3
    assert "sm_120 needs nvcc >= 12.8" in plan.reason
    verdict = _verdict(rtx5090)
    assert verdict.resolves_to is not None and "sdpa" in verdict.resolves_to


def test_t4_with_flash_attn_runs_sdpa_memory_efficient() -> None:
    plan = _plan("t4@torch=2.5.1,transformers=4.48.3,flash-attn=2.7.4")
    assert plan.implementation == "sdpa"
    assert plan.kernels == ("memory-efficient",)
    assert "only supports Ampere GPUs or newer" in plan.reason
    assert "flash_api.cpp:" in plan.reason


def test_4_30_with_optimum_1_8_runs_bettertransformer() -> None:
    profile = "a100@torch=2.0.1,transformers=4.30.2,optimum=1.8.0"
    assert _plan(profile, "bert").implementation == "bettertransformer"
    assert _verdict(profile).status.value == "supported"


def test_before_4_36_without_optimum_or_flash_attn_there_is_no_fastpath() -> None:
    profile = "a100@torch=2.1.2,transformers=4.35.2"
    assert _plan(profile).implementation == "eager"
    verdict = _verdict(profile)
    assert verdict.status.value == "unsupported"
    assert verdict.findings[0].rule_id == "fastpath-needs-sdpa-or-bettertransformer"


def test_flash_attn_ignored_before_4_36_leaves_eager_and_says_why() -> None:
    verdict = _verdict("t4@torch=2.1.2,transformers=4.34.1,flash-attn=2.3.3")
    assert verdict.status.value == "unsupported"
    assert "only supports Ampere GPUs or newer" in verdict.reason


def test_4_33_has_no_flash_attention_switch() -> None:
    plan = _plan("a100@torch=2.0.1,transformers=4.33.3,flash-attn=2.3.3")
    assert plan.implementation == "eager"
    assert "no flash-attention 2 switch" in plan.reason


def test_data_file_shape() -> None:
    data = fastpath_facts.load()
    covered = data["covered"]
    assert set(covered) == {"transformers", "flash-attn"}
    assert covered["transformers"] == list(data["transformers"])
    assert covered["flash-attn"] == list(data["flash-attn"])
    minors = {Version(v).release[:2] for v in covered["transformers"]}
    assert (4, 30) in minors and max(minors)[0] >= 5
    for release, facts in data["transformers"].items():
        for key in ("use_flash_attention_2", "attn_implementation", "to_bettertransformer"):
            assert facts[key]["file"] == "modeling_utils.py", (release, key)
            assert facts[key]["value"] is (facts[key]["line"] is not None), (release, key)
    for release, facts in data["flash-attn"].items():
        assert facts["archs"] and all(a["file"] == "setup.py" and a["line"] for a in facts["archs"])
        assert facts["gpu_check"]["value"], release


def _below(version: str) -> str:
    """The nearest lower release number (2.1.0 -> 2.0.99, 2.3.3 -> 2.3.2)."""
    parts = list(Version(version).release)
    index = max(i for i, p in enumerate(parts) if p > 0)
    parts[index] -= 1
    parts[index + 1 :] = [99] * (len(parts) - index - 1)
    return ".".join(map(str, parts))


FLOORS = [
    (release, floor)
    for release in fastpath_facts.covered()["transformers"]
    if (tf := fastpath_facts.transformers_release(release))
    and (floor := fastpath_facts.flash_floor(tf))
]


@pytest.mark.parametrize(("release", "floor"), FLOORS, ids=[r for r, _ in FLOORS])
def test_both_sides_of_each_flash_attn_floor(release: str, floor: tuple[str, str, str]) -> None:
    op, bound, _ = floor
    refused, accepted = (bound, f"{bound}.post1") if op == ">" else (_below(bound), bound)
    torch = "2.6.0" if Version(release) >= Version("5") else "2.1.2"
    base = f"a100@torch={torch},transformers={release}"
    assert _plan(f"{base},flash-attn={accepted}").implementation == "flash_attention_2"
    assert _plan(f"{base},flash-attn={refused}").implementation != "flash_attention_2"


SDPA_FLOORS = [
    (release, floor)
    for release in fastpath_facts.covered()["transformers"]
    if (tf := fastpath_facts.transformers_release(release))
    and (floor := tf.cited("sdpa_torch_floor").value)
]


@pytest.mark.parametrize(("release", "floor"), SDPA_FLOORS, ids=[r for r, _ in SDPA_FLOORS])
def test_both_sides_of_each_sdpa_torch_floor(release: str, floor: str) -> None:
    base = "a100@transformers=" + release
    assert _plan(f"{base},torch={floor}").implementation == "sdpa"
    assert _plan(f"{base},torch={_below(floor)}").implementation == "eager"

"""Several xdist workers on one GPU by declared memory: the plan, the guard, and real runs
on fake 1-, 2- and 8-GPU machines."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes import nvml_specs

from pytest_gpuinfer.fleet.export import CollectedTest, record_of
from pytest_gpuinfer.plugin.sharing import (
    HEADROOM_FRACTION,
    WORKER_RESERVE_BYTES,
    SharingPlan,
    collection_args,
    over_allowance,
    plan_sharing,
    too_many_workers,
    usable_bytes,
    workers_on_each_gpu,
)
from pytest_gpuinfer.plugin.xdist_support import SharingGuard
from pytest_gpuinfer.probes import probe
from pytest_gpuinfer.probes.report import Report
from pytest_gpuinfer.requirements.marker import parse

pytest_plugins = ["pytester"]

InstallNvml = Callable[[dict[str, Any] | None], None]
GiB = 2**30


def _machine(fake_nvml: InstallNvml, spec: dict[str, Any] | None) -> Report:
    fake_nvml(spec)
    return probe()


def _record(nodeid: str, gpu_test: bool = True, mode: str | None = None, **marker: Any) -> Any:
    requirements = parse([((), marker)] if marker else [])
    return record_of(CollectedTest(nodeid, mode, requirements, gpu_test))


# -- the plan -----------------------------------------------------------------------------


def test_usable_memory_is_free_less_the_headroom(fake_nvml: InstallNvml) -> None:
    gpu = _machine(fake_nvml, nvml_specs.h100()).gpus[0]
    assert gpu.free_memory_bytes is not None and gpu.total_memory_bytes is not None
    expected = gpu.free_memory_bytes - int(HEADROOM_FRACTION * gpu.total_memory_bytes)
    assert usable_bytes(gpu) == expected


@pytest.mark.parametrize(
    ("spec", "need_gib", "requested", "expected"),
    [
        # H100: 79.1 GiB free - 7.96 GiB headroom = 71.1 GiB usable.
        (nvml_specs.h100, 2, 4, 4),  # 4 x 3 GiB fit: capped by --gpuinfer-share
        (nvml_specs.h100, 20, 8, 3),  # 71.1 // 21 = 3
        (nvml_specs.h100_x2, 34, 4, 2),  # 71.1 // 35 = 2
        (nvml_specs.h100_x8, 40, 4, 1),  # 71.1 // 41 = 1: no sharing
        (nvml_specs.h100_x8, 90, 4, 4),  # larger than the card: it skips, so it does not count
        (nvml_specs.t4, 2, 8, 4),  # T4: 14.5 - 1.5 = 13 GiB; 13 // 3 = 4
    ],
)
def test_workers_per_gpu_from_the_largest_declared_need(
    fake_nvml: InstallNvml,
    spec: Callable[[], dict[str, Any]],
    need_gib: int,
    requested: int,
    expected: int,
) -> None:
    report = _machine(fake_nvml, spec())
    records = [
        _record("t.py::small", free_memory="1GiB"),
        _record("t.py::big", total_memory=f"{need_gib}GiB"),
        _record("t.py::cpu", gpu_test=False),  # not a GPU test: no declaration needed
    ]
    plan = plan_sharing(requested, records, report)
    assert plan.workers_per_gpu == expected
    usable = min(usable_bytes(g) or 0 for g in report.gpus)
    assert plan.usable_bytes == usable
    if need_gib * GiB <= usable:
        assert plan.max_need_bytes == need_gib * GiB
        # The guarantee: the tests that can run at once fit, with every worker's reserve.
        assert expected * (need_gib * GiB + WORKER_RESERVE_BYTES) <= usable
        assert plan.counted_tests == 2
    else:
        assert (plan.max_need_bytes, plan.counted_tests) == (GiB, 1)


def test_an_undeclared_gpu_test_keeps_one_worker_per_gpu(fake_nvml: InstallNvml) -> None:
    report = _machine(fake_nvml, nvml_specs.h100_x2())
    records = [
        _record("t.py::declared", free_memory="2GiB"),
        _record("t.py::undeclared", gpus=1),
        _record("t.py::also", gpus=1),
    ]
    plan = plan_sharing(4, records, report)
    assert plan.workers_per_gpu == 1
    assert plan.reason == (
        "off: GPU test t.py::undeclared and 1 more declares no memory "
        "(free_memory= or total_memory=)"
    )


def test_tests_that_skip_on_a_one_gpu_worker_do_not_count(fake_nvml: InstallNvml) -> None:
    report = _machine(fake_nvml, nvml_specs.h100_x2())
    records = [
        _record("t.py::declared", free_memory="2GiB"),
        _record("t.py::two_gpus", gpus=2),  # skips on every sharing worker: one GPU each
        _record("t.py::ampere_only", compute_capability="==8.0"),  # skips on an H100
        _record("t.py::huge", free_memory="500GiB"),  # skips everywhere
    ]
    plan = plan_sharing(4, records, report)
    assert (plan.workers_per_gpu, plan.max_need_bytes, plan.counted_tests) == (4, 2 * GiB, 1)


def test_no_sharing_without_gpus_or_when_not_asked(fake_nvml: InstallNvml) -> None:
    records = [_record("t.py::x", free_memory="1GiB")]
    assert plan_sharing(1, records, _machine(fake_nvml, nvml_specs.h100())).workers_per_gpu == 1
    cpu = plan_sharing(4, records, _machine(fake_nvml, nvml_specs.NO_DRIVER))
    assert (cpu.workers_per_gpu, cpu.reason) == (1, "no GPU to share")


def test_the_smallest_gpu_of_a_mixed_box_decides(fake_nvml: InstallNvml) -> None:
    report = _machine(fake_nvml, nvml_specs.v100_a100())
    plan = plan_sharing(8, [_record("t.py::x", free_memory="3GiB")], report)
    # V100 16 GiB: 15.5 free - 1.6 headroom = 13.9 GiB usable; 13.9 // 4 = 3.
    assert plan.workers_per_gpu == 3
    assert plan.usable_bytes == min(usable_bytes(g) or 0 for g in report.gpus)


def test_too_many_workers_is_a_usage_error_naming_the_limit() -> None:
    plan = SharingPlan(4, 2, "largest need 30.00 GiB", 30 * GiB, 71 * GiB)
    assert too_many_workers(plan, 8, 16) is None
    assert too_many_workers(plan, 8, 17) == (
        "gpuinfer: 17 xdist workers on 8 GPUs would put more than 2 on a GPU; the declared "
        "memory allows 16 (largest need 30.00 GiB): use -n auto or -n 16"
    )
    assert too_many_workers(SharingPlan(1, 1, "off"), 2, 4) is None  # today's round-robin


def test_round_robin_spread_and_header() -> None:
    assert workers_on_each_gpu(2, 5) == [3, 2]
    assert workers_on_each_gpu(8, 16) == [2] * 8
    plan = SharingPlan(4, 4, "why")
    assert plan.header_line(2, 8) == (
        "xdist: 8 workers on 2 GPUs, 4 per GPU; sharing by declared memory "
        "(--gpuinfer-share=4): why"
    )
    assert plan.header_line(2, 3).startswith("xdist: 3 workers on 2 GPUs, 2/1 per GPU;")


def test_idle_allowance_is_the_share_minus_one_test() -> None:
    plan = SharingPlan(4, 4, "why", max_need_bytes=10 * GiB, usable_bytes=64 * GiB)
    # 64 / 4 = 16 GiB share; one test (10) + the reserve (1) leaves 5 GiB to cache.
    assert plan.idle_allowance_bytes(4) == 5 * GiB
    assert over_allowance(5 * GiB, plan, 4) == (False, 5 * GiB)
    assert over_allowance(5 * GiB + 1, plan, 4) == (True, 5 * GiB)
    assert over_allowance(0, SharingPlan(4, 1, "off"), 4) == (False, None)


def test_the_guard_fails_tests_outside_the_plan() -> None:
    plan = SharingPlan(4, 2, "why", max_need_bytes=2 * GiB, usable_bytes=70 * GiB)
    guard = SharingGuard(plan, 2, "gw3")
    assert guard.check("t.py::ok", 2 * GiB) is None
    assert guard.check("t.py::none", None) == (
        "xdist worker gw3 shares its GPU with 1 other worker (--gpuinfer-share), and "
        "t.py::none declares no memory (free_memory= or total_memory=): the collection "
        "differs from the one the sharing plan was made from"
    )
    big = guard.check("t.py::big", 3 * GiB)
    assert big is not None and "declares 3.00 GiB, more than the plan's 2.00 GiB" in big
    guard.over = "it still holds 9 GiB"
    assert guard.check("t.py::ok", GiB) == (
        "xdist worker gw3 shares its GPU with 1 other worker (--gpuinfer-share): "
        "it still holds 9 GiB"
    )


def test_collection_pass_arguments_keep_the_users() -> None:
    args = collection_args(["-n", "auto", "tests", "-k", "fast"], Path("/tmp/r.json"))
    assert args[:5] == ["-n", "auto", "tests", "-k", "fast"]
    assert args[5:] == [
        "--collect-only",
        "-q",
        "-p",
        "no:cacheprovider",
        "--gpuinfer-requirements",
        "/tmp/r.json",
    ]


# -- real xdist runs ----------------------------------------------------------------------

SHARED_SUITE = """
import json, os
import pytest

def _record(name, gpu_report):
    out = os.path.join(os.environ["GPUINFER_TEST_OUT"], name + ".json")
    with open(out, "w") as stream:
        json.dump({
            "worker": os.environ.get("PYTEST_XDIST_WORKER"),
            "cvd": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "free": gpu_report.gpus[0].free_memory_bytes,
        }, stream)

@pytest.mark.parametrize("i", range(6))
@pytest.mark.gpuinfer(free_memory="6GiB")
def test_small(i, gpu_report):
    _record(f"small{i}", gpu_report)

@pytest.mark.gpuinfer(gpus=2)
def test_two_gpus():
    pass

def test_cpu():
    pass
"""


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("--gpuinfer", "-p", "no:randomly", "-rs", *args)


def test_two_gpus_shared_by_two_workers_each(
    pytester: pytest.Pytester, fake_nvml: InstallNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_nvml(nvml_specs.h100_x2())
    out = pytester.mkdir("out")
    monkeypatch.setenv("GPUINFER_TEST_OUT", str(out))
    pytester.makepyfile(test_suite=SHARED_SUITE)
    result = _run(pytester, "-n", "auto", "--gpuinfer-share", "2")
    result.stdout.fnmatch_lines(
        [
            "gpuinfer: xdist: 4 workers on 2 GPUs, 2 per GPU; sharing by declared memory "
            "(--gpuinfer-share=2): largest need 6.00 GiB + 1.00 GiB per worker; "
            "2 x 7.00 GiB <= 71.* GiB usable",
            "*4 workers [[]8 items[]]*",
        ]
    )
    result.assert_outcomes(passed=7, skipped=1)
    records = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert len(records) == 6
    workers_by_gpu: dict[str, set[str]] = {}
    for record in records:
        workers_by_gpu.setdefault(record["cvd"], set()).add(record["worker"])
        # Each worker's gpu_report shows its share of the usable memory as free.
        assert 35 * GiB < record["free"] < 36 * GiB
    uuids = {nvml_specs.gpu("x", (9, 0), 1, index=i)["uuid"] for i in range(2)}
    assert set(workers_by_gpu) <= uuids
    assert all(len(workers) <= 2 for workers in workers_by_gpu.values())


def test_one_gpu_with_an_undeclared_test_stays_one_worker(
    pytester: pytest.Pytester, fake_nvml: InstallNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_nvml(nvml_specs.h100())
    monkeypatch.setenv("GPUINFER_TEST_OUT", str(pytester.mkdir("out")))
    pytester.makepyfile(
        test_suite=SHARED_SUITE,
        test_more="""
        import pytest

        @pytest.mark.gpuinfer(compute_capability=">=9.0")
        def test_hopper():
            pass
        """,
    )
    result = _run(pytester, "-n", "auto", "--gpuinfer-share", "4")
    result.stdout.fnmatch_lines(
        [
            "gpuinfer: xdist: 1 worker on 1 GPU, 1 per GPU; sharing by declared memory "
            "(--gpuinfer-share=4): off: GPU test test_more.py::test_hopper declares no memory "
            "(free_memory= or total_memory=)",
            "*1 worker [[]9 items[]]*",
        ]
    )
    result.assert_outcomes(passed=8, skipped=1)


def test_eight_gpus_too_many_workers_for_the_declared_memory(
    pytester: pytest.Pytester, fake_nvml: InstallNvml
) -> None:
    fake_nvml(nvml_specs.h100_x8())
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.gpuinfer(free_memory="30GiB")
        def test_big():
            pass
        """
    )
    result = _run(pytester, "-n", "17", "--gpuinfer-share", "4")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: gpuinfer: 17 xdist workers on 8 GPUs would put more than 2 on a GPU; "
            "the declared memory allows 16 (largest need 30.00 GiB + 1.00 GiB per worker; "
            "2 x 31.00 GiB <= 71.* GiB usable): use -n auto or -n 16"
        ]
    )


def test_a_worker_fails_a_test_the_plan_never_saw(
    pytester: pytest.Pytester, fake_nvml: InstallNvml
) -> None:
    fake_nvml(nvml_specs.h100())
    pytester.makepyfile(
        """
        import os
        import pytest

        @pytest.mark.parametrize("i", range(2))
        @pytest.mark.gpuinfer(free_memory="1GiB")
        def test_declared(i):
            pass

        if os.environ.get("PYTEST_XDIST_WORKER"):  # collected by the workers only
            @pytest.mark.gpuinfer(gpus=1)
            def test_sneaked_in():
                pass
        """
    )
    result = _run(pytester, "-n", "2", "--gpuinfer-share", "2")
    result.stdout.fnmatch_lines(["gpuinfer: xdist: 2 workers on 1 GPU, 2 per GPU; *"])
    result.assert_outcomes(passed=2, errors=1)  # fails in setup, before any fixture loads
    result.stdout.fnmatch_lines(
        [
            "*xdist worker gw* shares its GPU with 1 other worker (--gpuinfer-share), and "
            "*test_sneaked_in declares no memory*"
        ]
    )

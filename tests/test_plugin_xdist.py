"""One GPU per xdist worker: the assignment function, and real ``-n`` runs on a fake NVML."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes import nvml_specs

from pytest_gpuinfer.plugin.xdist_support import assign, policy_line, worker_index
from pytest_gpuinfer.probes.software import probe_software

pytest_plugins = ["pytester"]

InstallNvml = Callable[[dict[str, Any] | None], None]

UUIDS = [nvml_specs.gpu("x", (8, 0), 1, index=i)["uuid"] for i in range(4)]


# -- the pure assignment ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "count", "expected"),
    [
        (0, 4, "GPU-a"),
        (3, 4, "GPU-d"),
        (0, 2, "GPU-a,GPU-b"),
        (1, 2, "GPU-c,GPU-d"),
        (0, 1, "GPU-a,GPU-b,GPU-c,GPU-d"),
        (0, 3, "GPU-a"),  # 4 // 3 = 1 each; GPU-d stays unused
        (2, 3, "GPU-c"),
    ],
)
def test_assign_without_outer_variable(index: int, count: int, expected: str) -> None:
    gpus = ["GPU-a", "GPU-b", "GPU-c", "GPU-d"]
    assert assign(None, gpus, index, count).visible_devices == expected


def test_assign_within_an_outer_variable_keeps_its_entries() -> None:
    # The session sees outer entries 2 and 3 (as CUDA ordinals 0 and 1).
    first = assign("2,3", ["GPU-c", "GPU-d"], 0, 2)
    second = assign("2,3", ["GPU-c", "GPU-d"], 1, 2)
    assert (first.visible_devices, first.ordinals) == ("2", (0,))
    assert (second.visible_devices, second.ordinals) == ("3", (1,))
    mig = assign("MIG-1, MIG-2", ["MIG-1", "MIG-2"], 1, 2)
    assert mig.visible_devices == "MIG-2"


def test_assign_ignores_outer_entries_cuda_never_reached() -> None:
    # CUDA stops at the invalid "x": only "1" is visible, so that is all a worker may get.
    assert assign("1,x,2", ["GPU-b"], 0, 1).visible_devices == "1"


def test_more_workers_than_gpus_share_round_robin() -> None:
    owned = [assign(None, ["GPU-a", "GPU-b"], i, 3).visible_devices for i in range(3)]
    assert owned == ["GPU-a", "GPU-b", "GPU-a"]
    assert assign(None, ["GPU-a", "GPU-b"], 2, 3).description == (
        "shares GPU 0 of 2 with other workers (3 workers)"
    )


def test_explicit_group_size_leaves_extra_workers_without_gpu() -> None:
    extra = assign(None, ["GPU-a", "GPU-b", "GPU-c"], 1, 2, gpus_per_worker=2)
    assert (extra.visible_devices, extra.ordinals) == ("", ())
    assert extra.description == "owns no GPU: 2 workers for 3 GPUs at 2 per worker"


@pytest.mark.parametrize(
    ("gpus", "workers", "line"),
    [
        (4, 4, "xdist: 4 workers, 1 GPU each; tests with gpus>1 skip"),
        (4, 2, "xdist: 2 workers, 2 GPUs each; tests with gpus>2 skip"),
        (5, 2, "xdist: 2 workers, 2 GPUs each (1 unused); tests with gpus>2 skip"),
        (1, 2, "xdist: 2 workers share 1 GPU round-robin (use -n auto for one GPU each)"),
        (0, 2, "xdist: 2 workers, no GPU to pin"),
    ],
)
def test_policy_line(gpus: int, workers: int, line: str) -> None:
    assert policy_line(gpus, workers) == line


def test_no_gpu_leaves_the_variable_alone() -> None:
    assert assign(None, [], 1, 2).visible_devices is None


def test_explicit_gpus_per_worker_never_overlaps() -> None:
    gpus = [f"GPU-{i}" for i in range(8)]
    owned = [assign(None, gpus, i, 3, gpus_per_worker=2).ordinals for i in range(3)]
    assert owned == [(0, 1), (2, 3), (4, 5)]
    flat = [o for group in owned for o in group]
    assert len(flat) == len(set(flat))


@pytest.mark.parametrize("bad", [(0, 0), (2, 2), (-1, 2)])
def test_assign_rejects_impossible_workers(bad: tuple[int, int]) -> None:
    with pytest.raises(ValueError):
        assign(None, ["GPU-a"], *bad)


def test_worker_index() -> None:
    assert worker_index("gw0") == 0
    assert worker_index("gw12") == 12
    with pytest.raises(ValueError):
        worker_index("main")


# -- real xdist runs ----------------------------------------------------------------------

RECORDING_SUITE = """
import json, os
import pytest

def _record(name, gpu_report):
    out = os.path.join(os.environ["GPUINFER_TEST_OUT"], name + "-" + os.environ.get(
        "PYTEST_XDIST_WORKER", "main") + ".json")
    with open(out, "w") as stream:
        json.dump({
            "worker": os.environ.get("PYTEST_XDIST_WORKER"),
            "cvd": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "gpus": [g.uuid for g in gpu_report.gpus],
        }, stream)

@pytest.mark.parametrize("i", range(8))
@pytest.mark.gpuinfer(gpus=1)
def test_one(i, gpu_report):
    _record(f"one{i}", gpu_report)

@pytest.mark.gpuinfer(gpus=2)
def test_two(gpu_report):
    _record("two", gpu_report)

@pytest.mark.gpuinfer(modes=["fp32", "int8"])
def test_mode(inference_mode):
    pass
"""


def _records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]


def test_cpu_only_machine_runs_under_n_2(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, fake_nvml: InstallNvml
) -> None:
    fake_nvml(nvml_specs.NO_DRIVER)
    pytester.makepyfile(
        """
        import os
        import pytest

        @pytest.mark.gpuinfer(modes=["fp32"])
        def test_cpu(inference_mode):
            assert "CUDA_VISIBLE_DEVICES" not in os.environ

        @pytest.mark.gpuinfer(gpus=1)
        def test_gpu():
            pass

        def test_plain():
            pass
        """
    )
    result = pytester.runpytest_subprocess(
        "--gpuinfer", "-n", "2", "-p", "no:randomly", "-rs", "--gpuinfer-report", "r.json"
    )
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "gpuinfer: no GPU: *",
            "*= gpuinfer summary =*",
            "mode   passed   failed  skipped",
            "fp32        1        0        0",
            "-           0        0        1",
            "skip reasons:",
            "    1 x needs gpus=1; found no GPU: *",
        ]
    )
    tests = json.loads((pytester.path / "r.json").read_text())["tests"]
    assert {t["nodeid"]: t["outcome"] for t in tests} == {
        "test_cpu_only_machine_runs_under_n_2.py::test_cpu[fp32]": "passed",
        "test_cpu_only_machine_runs_under_n_2.py::test_gpu": "skipped",
        "test_cpu_only_machine_runs_under_n_2.py::test_plain": "passed",
    }
    assert {t["worker"] for t in tests} <= {"gw0", "gw1"}


def test_n_auto_pins_one_gpu_per_worker(
    pytester: pytest.Pytester, fake_nvml: InstallNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_nvml(nvml_specs.a100_x4())
    out = pytester.mkdir("out")
    monkeypatch.setenv("GPUINFER_TEST_OUT", str(out))
    pytester.makepyfile(test_suite=RECORDING_SUITE)
    result = pytester.runpytest_subprocess(
        "--gpuinfer", "-n", "auto", "-p", "no:randomly", "-rs", "--gpuinfer-report", "r.json"
    )
    result.stdout.fnmatch_lines(
        [
            "gpuinfer: xdist: 4 workers, 1 GPU each; tests with gpus>1 skip",
            "*4 workers [[]11 items[]]*",
        ]
    )
    # test_two needs a worker owning 2 GPUs; with one GPU per worker it skips, never shares.
    result.stdout.fnmatch_lines(
        ["SKIPPED * needs gpus=2; found 1 GPU (xdist worker gw* owns GPU * of 4)"]
    )
    records = _records(out)
    assert len(records) == 8
    by_worker: dict[str, set[str]] = {}
    for record in records:
        assert record["gpus"] == [record["cvd"]]
        by_worker.setdefault(record["worker"], set()).add(record["cvd"])
    for worker, cvds in by_worker.items():
        assert cvds == {UUIDS[int(worker[2:])]}
    report = json.loads((pytester.path / "r.json").read_text())
    modes = {t["nodeid"]: t for t in report["tests"] if t["mode"]}
    if probe_software().torch_cuda is None:  # a CPU torch beside the GPUs: modes out
        assert {t["outcome"] for t in modes.values()} == {"skipped"}
        assert all(t["skip_reason"].startswith(f"mode {t['mode']} is") for t in modes.values())
    else:  # the GPU machine's CUDA torch drives the fake A100s
        assert {t["outcome"] for t in modes.values()} == {"passed"}
    assert len(report["probe"]["gpus"]) == 4  # the controller's report: the whole machine


def test_two_workers_on_four_gpus_own_two_each(
    pytester: pytest.Pytester, fake_nvml: InstallNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_nvml(nvml_specs.a100_x4())
    out = pytester.mkdir("out")
    monkeypatch.setenv("GPUINFER_TEST_OUT", str(out))
    pytester.makepyfile(test_suite=RECORDING_SUITE)
    result = pytester.runpytest_subprocess(
        "--gpuinfer", "-n", "2", "-p", "no:randomly", "-k", "two or one"
    )
    result.assert_outcomes(passed=9)
    groups = {",".join(UUIDS[0:2]), ",".join(UUIDS[2:4])}
    for record in _records(out):
        assert record["cvd"] in groups
        assert record["gpus"] == record["cvd"].split(",")


def test_outer_visible_devices_are_respected(
    pytester: pytest.Pytester, fake_nvml: InstallNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_nvml(nvml_specs.a100_x4())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    out = pytester.mkdir("out")
    monkeypatch.setenv("GPUINFER_TEST_OUT", str(out))
    pytester.makepyfile(test_suite=RECORDING_SUITE)
    result = pytester.runpytest_subprocess(
        "--gpuinfer", "-n", "auto", "-p", "no:randomly", "-k", "one"
    )
    result.stdout.fnmatch_lines(
        [
            "gpuinfer: 2 GPUs visible (CUDA_VISIBLE_DEVICES=3,1)",
            "gpuinfer: xdist: 2 workers, 1 GPU each; tests with gpus>1 skip",
            "*2 workers [[]8 items[]]*",
        ]
    )
    result.assert_outcomes(passed=8)
    seen = {(r["worker"], r["cvd"], r["gpus"][0]) for r in _records(out)}
    assert seen <= {("gw0", "3", UUIDS[3]), ("gw1", "1", UUIDS[1])}


def test_profile_under_xdist_gates_per_worker_without_touching_the_variable(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import os
        import pytest

        def test_reads(gpu_report):
            assert "CUDA_VISIBLE_DEVICES" not in os.environ
            assert gpu_report.profile == "t4"

        @pytest.mark.gpuinfer(compute_capability=">=8.0")
        def test_ampere():
            pass
        """
    )
    result = pytester.runpytest_subprocess(
        "--gpuinfer-profile", "t4", "-n", "2", "-p", "no:randomly", "-rs"
    )
    result.stdout.fnmatch_lines(
        ["gpuinfer: xdist: 2 workers share 1 GPU round-robin (use -n auto for one GPU each)"]
    )
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        ["SKIPPED * needs compute_capability >=8.0; found GPU 0 Tesla T4 (7.5)"]
    )

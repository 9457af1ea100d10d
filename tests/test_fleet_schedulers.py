"""Scheduler exports (`gpuinfer export`) and routing (`gpuinfer route`) from an export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_gpuinfer.cli.main import main
from pytest_gpuinfer.fleet.export import CollectedTest, export
from pytest_gpuinfer.fleet.route import CPU, Routing, route, runner_from_spec
from pytest_gpuinfer.fleet.scheduler import dra_selector, ray_accelerator, suite_need, to_yaml
from pytest_gpuinfer.probes.assumed_stack import with_assumed_stack
from pytest_gpuinfer.probes.probe import probe
from pytest_gpuinfer.probes.profiles import BUILTIN_PROFILES, load_profile
from pytest_gpuinfer.probes.report import Status
from pytest_gpuinfer.requirements.marker import parse


def _test(
    nodeid: str, gpu_test: bool = True, mode: str | None = None, **marker: Any
) -> CollectedTest:
    return CollectedTest(nodeid, mode, parse([((), marker)] if marker else []), gpu_test)


def _export(tmp_path: Path, *tests: CollectedTest) -> Path:
    path = tmp_path / "req.json"
    path.write_text(json.dumps(export(tests, modes=["fp16", "bf16"])), encoding="utf-8")
    return path


SUITE = (
    _test("t.py::test_bf16", mode="bf16", total_memory="20GiB"),
    _test("t.py::test_fp16", mode="fp16"),
    _test("t.py::test_plain", gpu_test=False),
)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_suite_need_names_the_products_that_meet_every_test() -> None:
    data = export(SUITE, modes=["fp16", "bf16"])
    need = suite_need(data, BUILTIN_PROFILES.values(), installed={})
    names = [p.name for p in need.eligible]
    # bf16 needs Ampere (8.0) and 20 GiB: the cheapest is the A10, the T4 is out.
    assert names[0] == "a10"
    assert "t4" not in names and "v100" not in names
    assert "h100" in names
    assert need.refused["t4"].startswith("t.py::test_bf16: ")
    assert (need.gpus, need.memory_mib, need.gpu_tests, need.tests) == (1, 20480, 2, 3)


def test_kubernetes_affinity_on_feature_discovery_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "export", str(_export(tmp_path, *SUITE)), "--format", "k8s")
    assert code == 0
    assert out.splitlines()[:9] == [
        "resources:",
        "  limits:",
        "    nvidia.com/gpu: 1",
        "affinity:",
        "  nodeAffinity:",
        "    requiredDuringSchedulingIgnoredDuringExecution:",
        "      nodeSelectorTerms:",
        "        - matchExpressions:",
        '            - key: "nvidia.com/gpu.product"',
    ]
    assert '"NVIDIA-A10"' in out and '"NVIDIA-H100-80GB-HBM3"' in out and "Tesla-T4" not in out
    assert '- key: "nvidia.com/gpu.memory"\n              operator: "Gt"\n' in out
    assert '- "20479"' in out  # Gt 20479 MiB: at least 20 GiB per GPU
    assert "2 of 3 tests need a GPU: 1 GPU(s) each, 20480 MiB per GPU claimed" in err


def test_dra_cel_slurm_ray_and_github(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(_export(tmp_path, *SUITE))
    _, out, _ = run(capsys, "export", path, "--format", "dra")
    assert 'apiVersion: "resource.k8s.io/v1"' in out
    assert 'deviceClassName: "gpu.nvidia.com"' in out
    assert (
        'device.attributes[\\"gpu.nvidia.com\\"].productName in [\\"NVIDIA A10\\"' in out
    )  # YAML-quoted CEL
    assert 'memory.compareTo(quantity(\\"20480Mi\\")) >= 0' in out
    _, out, _ = run(capsys, "export", path, "--format", "slurm")
    gres, constraint = out.splitlines()
    assert gres == "#SBATCH --gres=gpu:1"
    assert constraint.startswith('#SBATCH --constraint="a10|')
    _, out, _ = run(capsys, "export", path, "--format", "ray")
    # The A10 has no Ray constant: the cheapest GPU Ray names is the L4.
    assert out.splitlines()[-1] == "@ray.remote(num_gpus=1, accelerator_type=NVIDIA_L4)"
    assert out.splitlines()[0] == "from ray.util.accelerators import NVIDIA_L4  # L4"
    assert "these run it too: NVIDIA_A100_40G (A100-40G)" in out
    _, out, _ = run(capsys, "export", path, "--format", "github")
    matrix = json.loads(out)
    assert matrix["include"][0] == {"runner": "a10", "runs-on": "a10"}
    assert all(isinstance(entry["runs-on"], str) for entry in matrix["include"])


def test_dra_selector_and_ray_names() -> None:
    need = suite_need(export(SUITE[:1], modes=["bf16"]), [BUILTIN_PROFILES["h100"]], {})
    assert dra_selector(need) == (
        'device.attributes["gpu.nvidia.com"].productName in ["NVIDIA H100 80GB HBM3"] && '
        'device.capacity["gpu.nvidia.com"].memory.compareTo(quantity("20480Mi")) >= 0'
    )
    assert ray_accelerator("Tesla T4") == "NVIDIA_TESLA_T4"
    assert ray_accelerator("NVIDIA A100-SXM4-80GB") == "NVIDIA_A100_80G"
    assert ray_accelerator("NVIDIA A10") is None  # Ray names the A10G only
    assert to_yaml({"a": [{"b": 1, "c": "x"}], "d": []}) == 'a:\n  - b: 1\n    c: "x"\nd: []'


def test_export_with_no_gpu_test_and_no_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _export(tmp_path, _test("t.py::test_plain", gpu_test=False))
    code, out, err = run(capsys, "export", str(path), "--format", "k8s")
    assert (code, out) == (0, "")
    assert "no selected test needs a GPU" in err
    path = _export(tmp_path, _test("t.py::test_huge", total_memory="4TiB"))
    code, out, err = run(capsys, "export", str(path), "--format", "slurm")
    assert (code, out) == (1, "")
    assert "runs on: no profile" in err
    assert run(capsys, "export", str(path), "--format", "nomad")[0] == 2


def test_subset_narrows_the_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    subset = tmp_path / "t4.txt"
    subset.write_text("t.py::test_fp16\n", encoding="utf-8")
    path = str(_export(tmp_path, *SUITE))
    code, out, _ = run(capsys, "export", path, "--format", "slurm", "--subset", str(subset))
    assert code == 0
    assert out.splitlines()[1].startswith('#SBATCH --constraint="gtx1660|')


def test_plain_tests_go_to_the_cpu_runner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "subsets"
    code, stdout, err = run(
        capsys,
        "route",
        str(_export(tmp_path, *SUITE)),
        "cpu",
        "t4=t4",
        "--runner",
        "a100=a100-80gb",
        "--runs-on",
        "a100=arc-gpu-a100",
        "--out",
        str(out),
    )
    assert code == 0, err
    assert json.loads(stdout) == {
        "include": [
            {"runner": "cpu", "runs-on": "cpu", "tests": 1},
            {"runner": "t4", "runs-on": "t4", "tests": 1},
            {"runner": "a100", "runs-on": "arc-gpu-a100", "tests": 1},
        ]
    }
    assert (out / "cpu.txt").read_text() == "t.py::test_plain\n"
    assert (out / "t4.txt").read_text() == "t.py::test_fp16\n"
    routing = Routing.from_dict(json.loads((out / "routing.json").read_text()))
    assert routing.runners["cpu"].startswith("cpu: no GPU")
    assert routing.runners["t4"].startswith("profile t4")


def test_without_a_cpu_runner_plain_tests_go_first_and_cpu_takes_no_gpu_test() -> None:
    data = export(SUITE, modes=["fp16", "bf16"])
    routing = route(data, {"t4": runner_from_spec("t4")})
    assert routing.subsets["t4"] == ["t.py::test_fp16", "t.py::test_plain"]
    routing = route(data, {CPU: runner_from_spec(CPU)})
    assert routing.subsets[CPU] == ["t.py::test_plain"]
    assert routing.unroutable["t.py::test_fp16"] == [
        "cpu: a cpu runner takes only tests that need no GPU"
    ]


def test_a_committed_audit_json_is_judged_as_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    audit = tmp_path / "audit-t4.json"
    report = probe(profile="t4")
    report.verdicts["fp16"].status = Status.UNSUPPORTED  # what the runner itself found
    audit.write_text(json.dumps(report.to_dict()), encoding="utf-8")
    runner = runner_from_spec(str(audit))
    assert runner.judged_by == f"audit {audit}"
    routing = route(export(SUITE[1:2], modes=["fp16"]), {"t4": runner})
    assert list(routing.unroutable) == ["t.py::test_fp16"]
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({**report.to_dict(), "schema": "x/y"}), encoding="utf-8")
    code, _, err = run(capsys, "route", str(_export(tmp_path, *SUITE)), f"t4={bad}")
    assert code == 2
    assert (
        err == f"gpuinfer: error: runner '{bad}': report schema 'x/y' is not "
        "'pytest-gpuinfer/audit' (gpuinfer audit --json)\n"
    )


def test_a_profile_without_the_stack_here_is_judged_with_its_assumed_stack() -> None:
    h100 = load_profile("h100")
    assumed = with_assumed_stack(h100, installed={})  # a planning job without torch
    assert set(assumed.software) == {"torch", "transformers", "accelerate", "bitsandbytes"}
    assert assumed.software["torch"].endswith("+cu126") or "+cu" in assumed.software["torch"]
    report = probe(profile=assumed)
    assert report.verdicts["fp16"].status is Status.SUPPORTED
    assert report.verdicts["int8"].status is Status.SUPPORTED
    # What this machine has stays; a profile's own versions win over the assumption.
    pinned = with_assumed_stack(load_profile("h100@bitsandbytes=0.45.0"), {"torch": "2.6.0"})
    assert pinned.software["bitsandbytes"] == "0.45.0"
    assert "torch" not in pinned.software

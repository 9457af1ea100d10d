"""``gpuinfer merge``: reports of real runs on several (simulated and fake) machines."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes import nvml_specs

from pytest_gpuinfer.cli.main import main
from pytest_gpuinfer.fleet.merge import coverage, load

pytest_plugins = ["pytester"]

InstallNvml = Callable[[dict[str, Any] | None], None]

SUITE = """
import pytest

@pytest.mark.gpuinfer(modes=["fp16", "bf16"])
def test_modes(inference_mode):
    pass

@pytest.mark.gpuinfer(compute_capability=">=8.0")
def test_ampere():
    pass

@pytest.mark.gpuinfer(gpus=2)
def test_two_gpus():
    pass

@pytest.mark.gpuinfer(compute_capability="<3.0")
def test_fermi():
    pass

@pytest.mark.gpuinfer(gpus=1)
def test_fails():
    assert False

def test_plain():
    pass
"""


def _run(pytester: pytest.Pytester, report: str, *args: str) -> Path:
    pytester.runpytest("-p", "no:randomly", "--gpuinfer-report", report, *args)
    return pytester.path / report


def _cpu_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake machines carry a CPU build of torch, whatever this machine's torch is.

    The expectations below (mode tests skip on the fake boxes) are those of a torch without
    CUDA; on a GPU machine the installed torch has a CUDA build, so its build is replaced
    where the probe reads it (torch/version.py's ``cuda``), beside the fake NVML.
    """
    from dataclasses import replace

    from pytest_gpuinfer.probes import software

    real = software.probe_software
    monkeypatch.setattr(software, "probe_software", lambda: replace(real(), torch_cuda=None))


def _fleet(
    pytester: pytest.Pytester, fake_nvml: InstallNvml, monkeypatch: pytest.MonkeyPatch
) -> list[Path]:
    """Four machines: two simulated profiles, a fake 2 x H100 box, a fake T4 box."""
    _cpu_torch(monkeypatch)
    pytester.makepyfile(test_suite=SUITE)
    reports = [
        _run(pytester, "t4.json", "--gpuinfer-profile", "t4"),
        _run(pytester, "k80.json", "--gpuinfer-profile", "k80", "-k", "not plain"),
    ]
    fake_nvml(nvml_specs.h100_x2())
    reports.append(_run(pytester, "h100.json", "--gpuinfer", "--gpuinfer-machine", "ci-h100x2"))
    fake_nvml(nvml_specs.t4())
    reports.append(_run(pytester, "t4-real.json", "--gpuinfer", "--gpuinfer-machine", "ci-t4"))
    return reports


def test_coverage_matrix_of_a_fleet(
    pytester: pytest.Pytester,
    fake_nvml: InstallNvml,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reports = _fleet(pytester, fake_nvml, monkeypatch)
    host = socket.gethostname()
    capsys.readouterr()
    code = main(["merge", *map(str, reports)])
    out = capsys.readouterr().out.splitlines()
    assert code == 1  # test_fermi ran nowhere
    assert out[:7] == [
        "coverage: 7 tests x 4 machines",
        "",
        "machines, by GPU:",
        f"  1 x Tesla T4 (7.5): M1 {host} profile=t4, M4 ci-t4",
        f"  1 x Tesla K80 (3.7): M2 {host} profile=k80",
        "  2 x NVIDIA H100 80GB HBM3 (9.0): M3 ci-h100x2",
        "",
    ]
    assert out[7].split() == ["test", "M1", "M2", "M3", "M4"]
    rows = {
        line.split("  ")[0]: [c.strip() for c in line.split("  ")[1:] if c] for line in out[8:15]
    }
    # A simulated profile that meets a test's requirements: "would run" (the T4 profile's
    # fp16, any-GPU tests); an unmet requirement: "cannot run" and its reason's number.
    # The fake machines run what their requirements allow (the mode tests cannot: their
    # torch has no CUDA).
    assert rows["test_suite.py::test_fails"] == ["would run", "would run", "FAIL", "FAIL"]
    assert rows["test_suite.py::test_ampere"] == [
        "cannot run [8]",
        "cannot run [9]",
        "pass",
        "cannot run [8]",
    ]
    assert rows["test_suite.py::test_two_gpus"][2] == "pass"
    assert rows["test_suite.py::test_modes[fp16]"][0] == "would run"
    assert rows["test_suite.py::test_plain"] == ["pass", "-", "pass", "pass"]  # -k on k80
    # Each reason once, numbered, with the cells that refer to it.
    reasons = out[out.index("reasons:") + 1 :]
    at = reasons.index("  [8] needs compute_capability >=8.0; found GPU 0 Tesla T4 (7.5)")
    assert reasons[at + 1] == "      (cannot run, 2 cells on M1, M4)"
    assert sum("needs gpus=2; found 1 GPU" in line for line in out) == 1
    assert [line for line in out if line.startswith("legend: ")] == [
        "legend: passed: ran and passed; failed: ran and failed; would run: requirements "
        "met on a simulated profile; not executed (no such GPU there); cannot run: a "
        "requirement is unmet on that machine: see its reason; not collected: not "
        "collected on that machine (deselected, or not in its subset)"
    ]
    nowhere = out[out.index("ran on no machine: 3") + 1 :]
    assert nowhere == [
        "  test_suite.py::test_modes[fp16]",
        "  test_suite.py::test_modes[bf16]",
        "  test_suite.py::test_fermi",
    ]
    assert main(["merge", "--no-fail-on-unrun", *map(str, reports)]) == 0


def test_merged_json(
    pytester: pytest.Pytester,
    fake_nvml: InstallNvml,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reports = _fleet(pytester, fake_nvml, monkeypatch)
    capsys.readouterr()
    assert main(["merge", "--json", "--no-fail-on-unrun", *map(str, reports)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["schema"], data["schema_version"]) == ("pytest-gpuinfer/merge", "1")
    cov = data["coverage"]
    assert cov["machines_by_gpu"]["2 x NVIDIA H100 80GB HBM3 (9.0)"] == ["ci-h100x2"]
    tests = {t["nodeid"]: t for t in cov["tests"]}
    ampere = tests["test_suite.py::test_ampere"]
    assert ampere["ran_on"] == ["ci-h100x2"]
    assert ampere["machines"]["ci-t4"] == {
        "outcome": "skipped",
        "state": "cannot run",
        "reason": "needs compute_capability >=8.0; found GPU 0 Tesla T4 (7.5)",
    }
    t4 = f"{socket.gethostname()} profile=t4"
    assert tests["test_suite.py::test_fails"]["machines"][t4]["state"] == "would run"
    assert tests["test_suite.py::test_fails"]["machines"]["ci-t4"]["state"] == "failed"
    k80 = f"{socket.gethostname()} profile=k80"
    assert tests["test_suite.py::test_plain"]["machines"][k80]["outcome"] == "not collected"
    assert cov["ran_nowhere"] == [
        "test_suite.py::test_modes[fp16]",
        "test_suite.py::test_modes[bf16]",
        "test_suite.py::test_fermi",
    ]


def test_audits_say_which_machines_run_each_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = Path(__file__).parents[1] / "pytest_gpuinfer" / "data" / "tiny-trained-lm"
    paths = []
    for profile in ("t4", "a100-40gb", "k80"):
        main(["audit", "--profile", profile, "--json", "--model", str(model)])
        path = tmp_path / f"{profile}.json"
        path.write_text(capsys.readouterr().out)
        paths.append(path)
    assert main(["merge", *map(str, paths)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"modes: which machines can run each mode (model: {model})"
    rows = {line.split()[0]: line for line in out if line.split()[:1] in (["bf16"], ["int8"])}
    assert rows["bf16"].split()[-1] == "M2"  # only the A100 has bf16
    assert rows["int8"].split()[-2:] == ["M1", "M2"]  # k80 (3.7): bitsandbytes needs >= 6.0
    assert "unsupported, fits" in rows["int8"]
    assert main(["merge", "--json", *map(str, paths)]) == 0
    modes = json.loads(capsys.readouterr().out)["modes"]["modes"]
    assert modes["bf16"]["runnable_on"] == ["profile=a100-40gb"]
    assert modes["fp16"]["machines"]["profile=t4"]["fit"] == "supported"


# -- bad input: one line each, exit 2 --------------------------------------------------------


def _one_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def test_bad_input_is_one_line_and_exit_2(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    report = _run(pytester, "t4.json", "--gpuinfer-profile", "t4")
    capsys.readouterr()

    assert _one_error(capsys, ["merge"]) == (
        "gpuinfer: error: no report given; expected one or more --gpuinfer-report or "
        "`gpuinfer audit --json` files"
    )

    other = pytester.path / "other.json"
    other.write_text(json.dumps({"results": []}))
    assert _one_error(capsys, ["merge", str(report), str(other)]) == (
        f"gpuinfer: error: {other} is not a pytest-gpuinfer report: expected the JSON of "
        "--gpuinfer-report or of `gpuinfer audit --json`"
    )

    text = pytester.path / "junit.xml"
    text.write_text("<testsuite/>")
    assert "is not JSON" in _one_error(capsys, ["merge", str(text)])

    old = pytester.path / "old.json"
    data = json.loads(report.read_text())
    data["schema_version"] = "1"
    del data["machine"]
    old.write_text(json.dumps(data))
    assert _one_error(capsys, ["merge", str(old)]) == (
        f"gpuinfer: error: {old} is a pytest-gpuinfer report of schema_version '1'; "
        "expected '2' (re-run the suite with this pytest-gpuinfer)"
    )

    copy = pytester.path / "copy.json"
    copy.write_text(report.read_text())
    assert _one_error(capsys, ["merge", str(report), str(copy)]) == (
        f"gpuinfer: error: {report} and {copy} are both from machine "
        f"'{socket.gethostname()} profile=t4'; give one report per machine (name runs apart "
        "with NAME=PATH or --gpuinfer-machine)"
    )
    # Named apart, the same file twice is two machines.
    assert main(["merge", "--no-fail-on-unrun", f"a={report}", f"b={copy}"]) == 0
    assert "missing.json" in _one_error(capsys, ["merge", "missing.json"])


def test_load_reads_names_and_outcomes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    report = _run(pytester, "t4.json", "--gpuinfer-profile", "t4")
    runs, audits = load([f"ci-t4={report}"])
    assert audits == []
    assert runs[0].machine.name == "ci-t4"
    cov = coverage(runs)
    assert cov.cell("test_suite.py::test_plain", "ci-t4").outcome == "passed"
    assert cov.cell("test_suite.py::nope", "ci-t4").outcome == "not collected"


def test_a_report_without_state_shows_its_skips_as_skips(pytester: pytest.Pytester) -> None:
    """``state`` joined schema 2 later: an earlier report of that version still merges."""
    pytester.makepyfile(test_suite=SUITE)
    report = _run(pytester, "t4.json", "--gpuinfer-profile", "t4")
    data = json.loads(report.read_text())
    for test in data["tests"]:
        del test["state"]
    report.write_text(json.dumps(data))
    cov = coverage(load([f"old={report}"])[0])
    assert cov.cell("test_suite.py::test_ampere", "old").state == "skipped"
    assert cov.cell("test_suite.py::test_plain", "old").state == "passed"

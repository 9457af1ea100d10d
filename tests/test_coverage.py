"""The closed world: a version no generated table read is unconfirmed, never "supported"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_gpuinfer.cli.main import main
from pytest_gpuinfer.probes import coverage
from pytest_gpuinfer.probes.architectures import architecture_name
from pytest_gpuinfer.probes.facts import Facts
from pytest_gpuinfer.probes.report import DriverInfo, GPUInfo, SoftwareStack, Status
from pytest_gpuinfer.probes.rule import UNCONFIRMED
from pytest_gpuinfer.probes.rules import judge
from pytest_gpuinfer.probes.rules_coverage import COVERAGE_RULES, USED_IN

READ = {"transformers": ["5.0.0", "5.1.0", "5.3.0"], "accelerate": ["1.1.0", "1.2.0"]}


@pytest.fixture
def synthetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data folder whose only table read transformers 5.0.0, 5.1.0, 5.3.0."""
    (tmp_path / "floors.json").write_text(json.dumps({"covered": READ}), encoding="utf-8")
    monkeypatch.setattr(coverage, "DATA_DIR", tmp_path)
    return tmp_path


def gpu() -> GPUInfo:
    return GPUInfo(index=0, name="Test GPU", compute_capability=(9, 0),
                   architecture=architecture_name((9, 0)))  # fmt: skip


def stack(**packages: str) -> SoftwareStack:
    return SoftwareStack(python="3.12.3", platform="Linux-x86_64", packages=dict(packages))


@pytest.mark.usefixtures("synthetic")
@pytest.mark.parametrize(
    ("version", "where"),
    [("5.3.0", "read"), ("5.4.0", "newer"), ("5.2.0", "between"), ("4.57.0", "older"),
     ("5.1.0+local", "read"), ("5.1.0rc1", "read"), ("5.2.0rc1", "between")],
)  # fmt: skip
def test_a_version_is_covered_only_where_it_was_read(version: str, where: str) -> None:
    found = coverage.coverage("floors.json", "transformers", version)
    assert found is not None and found.where == where
    assert coverage.is_covered("transformers", version, "floors.json") is (where == "read")
    assert coverage.coverage("bnb_binaries.json", "transformers", version) is None


@pytest.mark.usefixtures("synthetic")
def test_between_names_the_releases_either_side() -> None:
    missing = coverage.uncovered("transformers", "5.2.0")
    assert missing is not None
    assert coverage.describe(missing) == (
        "transformers 5.2.0, not a release read (between 5.1.0 and 5.3.0) "
        "(tables: floors.json read transformers 5.0.0-5.3.0)"
    )
    assert coverage.uncovered("transformers", "5.1.0") is None
    assert coverage.uncovered("torch", "9.9.9") is None  # no table reads torch here


@pytest.mark.usefixtures("synthetic")
@pytest.mark.parametrize(
    ("transformers", "status"),
    [("5.3.0", Status.SUPPORTED), ("5.4.0", Status.DEGRADED), ("5.2.0", Status.DEGRADED)],
)
def test_an_uncovered_version_is_degraded_and_unconfirmed(
    transformers: str, status: Status
) -> None:
    software = stack(torch="2.11.0", transformers=transformers, accelerate="1.2.0")
    software.torch_cuda = "13.0"
    verdict = judge([gpu()], software, driver=DriverInfo(cuda_driver_version="13.0"))["fp16"]
    assert verdict.status is status, verdict.reason
    unconfirmed = [f for f in verdict.findings if f.message.startswith(UNCONFIRMED)]
    if status is Status.SUPPORTED:
        assert not unconfirmed and not verdict.assumptions
        return
    (finding,) = unconfirmed
    assert finding.rule_id == "closed-world-transformers" and not finding.confirmed
    assert f"found transformers {transformers}" in finding.message
    assert "floors.json read transformers 5.0.0-5.3.0" in finding.message
    assert "its floors on torch" in finding.message
    assert finding.source.startswith("closed world")
    assert any(f"transformers {transformers}" in a for a in verdict.assumptions)
    assert verdict.sources == [finding.source]


def test_every_closed_world_rule_fires_and_holds_on_the_real_tables() -> None:
    for rule in COVERAGE_RULES:
        package = rule.id.removeprefix("closed-world-")
        releases = coverage.covered_releases(coverage.tables_for(package)[0], package)
        newest, mode = releases[-1], next(iter(USED_IN[package]))
        assert mode in rule.modes
        newer = f"{newest.major}.{newest.minor + 1}.0"
        fires = rule.evaluate(Facts(stack(**{package: newer}), gpu()))
        assert fires is not None and fires.status is Status.DEGRADED, rule.id
        assert fires.message.startswith(UNCONFIRMED) and f"{package} {newer}" in fires.message
        assert rule.evaluate(Facts(stack(**{package: str(newest)}), gpu())) is None, rule.id


def test_strict_fails_an_unconfirmed_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    profile = "h100@torch=2.11.0,transformers=5.99.0,accelerate=1.15.0"
    assert main(["audit", "--profile", profile, "--modes", "fp16"]) == 0
    text = capsys.readouterr().out
    assert "degraded" in text and "unconfirmed: transformers" in text
    assert "[closed world" in text and "assumes: " in text
    assert main(["audit", "--profile", profile, "--modes", "fp16", "--strict"]) == 1
    capsys.readouterr()
    assert main(["audit", "--profile", profile, "--modes", "fp16", "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)["verdicts"]["fp16"]
    assert verdict["status"] == "degraded"
    (finding,) = [f for f in verdict["findings"] if not f["confirmed"]]
    assert finding["rule_id"] == "closed-world-transformers"
    assert finding["source"] in verdict["sources"]
    assert any("transformers 5.99.0" in a for a in verdict["assumptions"])

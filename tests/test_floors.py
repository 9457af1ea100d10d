"""The generated floors (probes/data/floors.json): the file's shape, one rule per row, and
every row at its boundary, on both sides."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from pytest_gpuinfer.probes import probe
from pytest_gpuinfer.probes.facts import Facts
from pytest_gpuinfer.probes.modes import MODES
from pytest_gpuinfer.probes.report import SoftwareStack, Status
from pytest_gpuinfer.probes.rules import RULES
from pytest_gpuinfer.probes.rules_floors import (
    FLOOR_RULES,
    UNCONFIRMED_KINDS,
    Floor,
    floors,
    load_data,
)

DATA = load_data()
ROWS: list[dict[str, Any]] = DATA["floors"]
KINDS = {"declared", "declared-extra", "import", "load-quantized", "load-int8", "load-4bit"}


def test_data_file_shape() -> None:
    assert DATA["schema"] == "pytest-gpuinfer/floors"
    assert DATA["schema_version"] == "1"
    assert DATA["generated_by"] == "scripts/generate_floors.py"
    assert Version(DATA["generated_at"].replace("-", "."))
    covered = DATA["covered"]
    assert set(covered) == {"torch", "transformers", "accelerate", "bitsandbytes", "optimum"}
    for package, releases in covered.items():
        assert releases, package
        versions = [Version(r) for r in releases]
        assert versions == sorted(versions), package
    for row in ROWS:
        assert set(row) == {
            "package", "releases", "requires", "specifier", "kind", "effect", "modes", "source",
        }  # fmt: skip
        assert row["kind"] in KINDS, row
        assert row["effect"].strip()
        assert row["modes"] == ["all"] or set(row["modes"]) <= set(MODES), row
        releases, specifier = SpecifierSet(row["releases"]), SpecifierSet(row["specifier"])
        assert str(specifier), row
        source = row["source"]
        assert set(source) == {"release", "file", "line"}
        assert source["release"] in covered[row["package"]], row
        assert releases.contains(source["release"]), row
        assert source["file"].strip() and isinstance(source["line"], int) and source["line"] > 0


def test_every_row_is_one_rule() -> None:
    counts = Counter(r.id for r in RULES)
    ids = [fl.id for fl in floors()]
    assert len(ids) == len(ROWS) == len(FLOOR_RULES)
    assert all(counts[i] == 1 for i in ids), [i for i in ids if counts[i] != 1]
    assert {r.id for r in FLOOR_RULES} == set(ids)


def _below(version: Version) -> str:
    """A release just below ``version``: 2.1 -> 2.0.999, 0.37.2 -> 0.37.1.999."""
    parts = list(version.release)
    last = max(i for i, part in enumerate(parts) if part > 0)
    parts[last] -= 1
    return ".".join(str(p) for p in [*parts[: last + 1], 999])


def _sides(specifier: SpecifierSet) -> list[tuple[str, bool]]:
    """(version, meets the floor) on both sides of each bound of ``specifier``."""
    sides: list[tuple[str, bool]] = []
    for clause in specifier:
        bound = Version(clause.version)
        if clause.operator in (">=", "~="):
            sides += [(clause.version, True), (_below(bound), False)]
        elif clause.operator == "<":
            sides += [(clause.version, False), (_below(bound), True)]
    # A side of one bound may fall outside another (an exclusion, an upper bound).
    return [(v, meets) for v, meets in sides if not meets or specifier.contains(v)]


def _facts(fl: Floor, package_version: str, requires_version: str) -> Facts:
    packages: dict[str, str | None] = {
        "torch": "2.13.0",
        "transformers": "5.23.0",
        "accelerate": "1.15.0",
        "bitsandbytes": "0.50.2",
        "optimum": None,
    }
    packages[fl.package] = package_version
    python = "3.12.3"
    if fl.requires == "python":
        python = requires_version
    else:
        packages[fl.requires] = requires_version
    return Facts(SoftwareStack(python=python, platform="Linux-x86_64", packages=packages), None)


def _rule(fl: Floor) -> Any:
    (rule,) = [r for r in RULES if r.id == fl.id]
    return rule


BOUNDARIES = [
    pytest.param(fl, version, meets, id=f"{fl.id}-{fl.requires}{version}")
    for fl in floors()
    for version, meets in _sides(fl.specifier)
]


@pytest.mark.parametrize(("fl", "version", "meets"), BOUNDARIES)
def test_floor_boundary(fl: Floor, version: str, meets: bool) -> None:
    finding = _rule(fl).evaluate(_facts(fl, fl.release, version))
    if meets:
        assert finding is None, finding
        return
    assert finding is not None, f"{fl.id} should fire for {fl.requires} {version}"
    unconfirmed = fl.kind in UNCONFIRMED_KINDS
    assert finding.status is (Status.UNKNOWN if unconfirmed else Status.UNSUPPORTED)
    assert f"[{fl.package} {fl.release} {fl.file}:{fl.line}]" in finding.message
    assert f"found {fl.requires.replace('python', 'Python')} {version}" in finding.message
    if fl.kind == "declared":
        assert "cannot be installed together" in finding.message


def _first_after(fl: Floor) -> str | None:
    later = [
        r
        for r in DATA["covered"][fl.package]
        if Version(r) > Version(fl.release) and not fl.releases.contains(r)
    ]
    return later[0] if later else None


@pytest.mark.parametrize("fl", [f for f in floors() if _first_after(f)], ids=lambda f: f.id)
def test_floor_stops_at_its_releases(fl: Floor) -> None:
    after = _first_after(fl)
    assert after is not None
    below = next(v for v, meets in _sides(fl.specifier) if not meets)
    assert _rule(fl).evaluate(_facts(fl, after, below)) is None


def test_not_installed_means_the_floor_does_not_apply() -> None:
    fl = next(f for f in floors() if f.requires == "accelerate" and f.kind == "load-quantized")
    facts = _facts(fl, fl.release, "0.1.0")
    facts.software.packages["accelerate"] = None
    assert _rule(fl).evaluate(facts) is None


def test_transformers_4_52_disables_torch_2_0_through_the_profile() -> None:
    report = probe("a100@torch=2.0.1,transformers=4.52.1,bitsandbytes=0.44.1", modes=["fp16"])
    verdict = report.verdicts["fp16"]
    assert verdict.status is Status.UNSUPPORTED
    assert "needs torch >=2.1" in verdict.reason
    assert "found torch 2.0.1 with transformers 4.52.1" in verdict.reason
    assert "transformers/utils/import_utils.py:" in verdict.reason


def test_bitsandbytes_torch_floor_reaches_only_the_quantized_modes() -> None:
    report = probe("a100@torch=2.2.2,transformers=4.48.3,bitsandbytes=0.48.2")
    assert report.verdicts["int8"].status is Status.UNSUPPORTED
    assert "bitsandbytes 0.48.0 bitsandbytes-0.48.0.dist-info/METADATA" in (
        report.verdicts["int8"].reason
    )
    assert "bitsandbytes" not in report.verdicts["fp16"].reason


def test_transformers_5_torch_floor_follows_the_release() -> None:
    # 5.0 disables torch below 2.2 only; 5.20 below 2.6 (the hand row said 2.6 for all 5.x).
    early = probe("a100@torch=2.4.1,transformers=5.0.0", modes=["fp16"]).verdicts["fp16"]
    late = probe("a100@torch=2.4.1,transformers=5.20.0", modes=["fp16"]).verdicts["fp16"]
    assert early.status is Status.SUPPORTED, early.reason
    assert late.status is Status.UNSUPPORTED and "needs torch >=2.6" in late.reason

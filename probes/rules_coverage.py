"""Closed-world rule rows: a package version that no generated table read is unconfirmed.

One row per package the tables read (probes.coverage). Where no table covers the version
in play (newer than every release read, older, or between two of them), nothing the
tables say holds for it: the finding names the fact left unknown and the tables, and the
verdict is degraded (``--strict`` fails it), never a plain "supported".
"""

from __future__ import annotations

from pytest_gpuinfer.probes import coverage, platforms
from pytest_gpuinfer.probes.facts import Facts
from pytest_gpuinfer.probes.report import Status
from pytest_gpuinfer.probes.rule import ALL, QUANTIZED, Rule

USED_IN: dict[str, frozenset[str]] = {
    "torch": ALL,
    "transformers": ALL,
    "accelerate": ALL,
    "bitsandbytes": QUANTIZED,
    "optimum": frozenset({"fastpath"}),
    "flash-attn": frozenset({"fastpath"}),
}
"""The modes whose verdict rests on what the tables say about each package."""


def _version(f: Facts, package: str) -> str:
    return f.software.packages.get(package) or ""


def _applies(package: str) -> object:
    def applies(f: Facts) -> bool:
        if not f.has(package):
            return False
        # A JetPack torch has a row of its own (jetpack-torch-not-tabulated).
        return not (
            package == "torch"
            and f.platform == "tegra"
            and platforms.is_jetpack_build(_version(f, "torch"))
        )

    return applies


def _rule(package: str) -> Rule:
    def holds(f: Facts) -> bool:
        return coverage.uncovered(package, _version(f, package)) is None

    def found(f: Facts) -> str:
        missing = coverage.uncovered(package, _version(f, package))
        assert missing is not None
        return coverage.describe(missing)

    applies = _applies(package)
    assert callable(applies)
    return Rule(
        id=f"closed-world-{package}",
        modes=USED_IN[package],
        device="any",
        requirement=f"{package} must be a release the generated tables read, or nothing "
        f"confirms {coverage.PACKAGE_FACTS[package]}",
        otherwise=Status.DEGRADED,
        source="closed world: no covered release in probes/data/" + ", ".join(coverage.TABLES),
        applies=applies,
        holds=holds,
        found=found,
        confirmed=False,
    )


COVERAGE_RULES: tuple[Rule, ...] = tuple(_rule(package) for package in USED_IN)

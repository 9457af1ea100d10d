"""Rule rows for the version floors between packages, one per row of data/floors.json.

The rows are generated from the releases themselves (scripts/generate_floors.py): the
requirements each wheel declares and the floors transformers checks at import or at load.
Each row names the releases it holds for, so a rule applies only to those. A declared floor
and a checked one below which the stack cannot install, import or load are "unsupported";
a floor declared only for an extra (``transformers[torch]``), which nothing checks, is an
"unconfirmed" unknown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from pytest_gpuinfer.probes.facts import Facts, UnknownFact
from pytest_gpuinfer.probes.report import Status
from pytest_gpuinfer.probes.rule import ALL, Rule

DATA = "data/floors.json"
SCHEMA = "pytest-gpuinfer/floors"
UNCONFIRMED_KINDS = frozenset({"declared-extra"})
"""Kinds nothing enforces: a stack below them is unconfirmed, not refused."""


@dataclass(frozen=True)
class Floor:
    """One row of data/floors.json."""

    package: str
    releases: SpecifierSet
    releases_text: str
    requires: str
    specifier: SpecifierSet
    kind: str
    effect: str
    modes: frozenset[str]
    release: str
    file: str
    line: int

    @property
    def id(self) -> str:
        return f"floor-{self.package}-{self.requires}-{self.kind}-{self.release}"

    @property
    def where(self) -> str:
        return f"{self.package} {self.release} {self.file}:{self.line}"

    def covers(self, f: Facts) -> bool:
        """The installed ``package`` is one of the releases this row holds for."""
        return f.has(self.package) and self.releases.contains(
            f.version(self.package), prereleases=True
        )

    def met(self, f: Facts) -> bool:
        return self.specifier.contains(_version(f, self.requires), prereleases=True)


def _version(f: Facts, package: str) -> Version:
    if package != "python":
        return f.version(package)
    try:
        return Version(f.software.python.split()[0])
    except (InvalidVersion, IndexError):
        raise UnknownFact(f"Python version {f.software.python!r} cannot be parsed") from None


def _has(f: Facts, package: str) -> bool:
    return package == "python" or f.has(package)


def _label(f: Facts, package: str) -> str:
    return f"Python {f.software.python}" if package == "python" else f.pkg(package)


def _floor(row: dict[str, Any]) -> Floor:
    source = row["source"]
    try:
        releases, specifier = SpecifierSet(row["releases"]), SpecifierSet(row["specifier"])
    except InvalidSpecifier as error:
        raise ValueError(f"{DATA}: bad specifier in {row!r}: {error}") from None
    modes = ALL if row["modes"] == ["all"] else frozenset(row["modes"])
    return Floor(
        package=row["package"],
        releases=releases,
        releases_text=row["releases"],
        requires=row["requires"],
        specifier=specifier,
        kind=row["kind"],
        effect=row["effect"],
        modes=modes,
        release=source["release"],
        file=source["file"],
        line=int(source["line"]),
    )


@cache
def load_data() -> dict[str, Any]:
    """The data file, read once (it ships in the package: pyproject package-data)."""
    text = resources.files("pytest_gpuinfer.probes").joinpath(DATA).read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{DATA}: schema {data.get('schema')!r}, expected {SCHEMA!r}")
    return data


@cache
def floors() -> tuple[Floor, ...]:
    return tuple(_floor(row) for row in load_data()["floors"])


def covered(f: Facts, package: str, requires: str, mode: str) -> bool:
    """Whether a generated floor speaks for ``package`` -> ``requires`` in ``mode`` here.

    Hand rows that state the same fact for releases the data does not reach ask this, so
    a stack is not refused twice for one reason.
    """
    return any(
        fl.package == package
        and fl.requires == requires
        and mode in fl.modes
        and fl.kind not in UNCONFIRMED_KINDS
        and fl.covers(f)
        for fl in floors()
    )


def _requirement(fl: Floor) -> str:
    text = f"{fl.package} {fl.releases_text} needs {fl.requires} {fl.specifier} ({fl.effect})"
    if fl.kind == "declared":
        text += ": this stack cannot be installed together"
    return text


def _rule(fl: Floor) -> Rule:
    return Rule(
        id=fl.id,
        modes=fl.modes,
        device="any",
        requirement=_requirement(fl),
        otherwise=Status.UNKNOWN if fl.kind in UNCONFIRMED_KINDS else Status.UNSUPPORTED,
        source=f"{fl.where} (probes/data/floors.json, {fl.kind})",
        applies=lambda f: _has(f, fl.requires) and fl.covers(f),
        holds=fl.met,
        found=lambda f: f"{_label(f, fl.requires)} with {f.pkg(fl.package)} [{fl.where}]",
        confirmed=fl.kind not in UNCONFIRMED_KINDS,
    )


FLOOR_RULES: tuple[Rule, ...] = tuple(_rule(fl) for fl in floors())

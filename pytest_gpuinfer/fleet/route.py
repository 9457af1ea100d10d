"""Route exported tests to CI runners: each test to the first runner whose hardware meets it.

A runner is ``cpu`` (no GPU: it takes the tests that need none), a built-in profile name, a
profile file, or the JSON of ``gpuinfer audit --json`` captured on it (committed, e.g.
``ci/runners/t4.json``): that report is judged as it is, the runner's own packages
included. A profile is judged with this machine's packages where it has them and the
profile's assumed stack where it lacks them (``probes.assumed_stack``), so a planning job
without torch still routes mode tests. The command is ``gpuinfer route``
(:mod:`pytest_gpuinfer.cli.route`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_gpuinfer.probes.report import Report

CPU = "cpu"
"""The runner spec of a machine without a GPU."""


@dataclass(frozen=True)
class Runner:
    """One runner class: its hardware (None for ``cpu``) and how it was described."""

    report: Report | None
    judged_by: str

    @property
    def cpu(self) -> bool:
        return self.report is None


@dataclass
class Routing:
    """Which runner runs which test: ``routing.json`` (schema ``pytest-gpuinfer/routing`` 1)."""

    subsets: dict[str, list[str]]
    """Runner label -> node ids it runs (every label present, maybe empty)."""
    unroutable: dict[str, list[str]]
    """Node id -> why each runner cannot run it."""
    runners: dict[str, str] = field(default_factory=dict)
    """Runner label -> what it was judged from (audit file, profile and its stack, cpu)."""
    runs_on: dict[str, str] = field(default_factory=dict)
    """Runner label -> the one ``runs-on`` label of its runners (default: the label)."""

    def matrix(self) -> dict[str, Any]:
        """GitHub Actions' matrix (``{"include": [...]}``): runners that got a test, each
        with the single ``runs-on`` label Actions Runner Controller's scale sets take."""
        return {
            "include": [
                {"runner": k, "runs-on": self.runs_on.get(k, k), "tests": len(v)}
                for k, v in self.subsets.items()
                if v
            ]
        }

    def to_dict(self) -> dict[str, Any]:
        from pytest_gpuinfer.schemas import ROUTING

        return {
            **ROUTING.stamp(),
            "subsets": self.subsets,
            "unroutable": self.unroutable,
            "runners": self.runners,
            "runs_on": self.runs_on,
        }

    @classmethod
    def from_dict(cls, data: object, source: object = "routing.json") -> Routing:
        from pytest_gpuinfer.schemas import ROUTING

        checked = ROUTING.check(data, source)
        return cls(
            dict(checked["subsets"]),
            dict(checked["unroutable"]),
            dict(checked.get("runners", {})),
            dict(checked.get("runs_on", {})),
        )


def runner_from_spec(spec: str) -> Runner:
    """``cpu``, an audit JSON file, or a profile (name or file) with its assumed stack."""
    from pytest_gpuinfer.probes import probe
    from pytest_gpuinfer.probes.assumed_stack import with_assumed_stack
    from pytest_gpuinfer.probes.errors import InputError
    from pytest_gpuinfer.probes.profiles import load_profile
    from pytest_gpuinfer.probes.report import Report as ReportClass
    from pytest_gpuinfer.probes.software import probe_software

    if spec.strip().lower() == CPU:
        return Runner(None, "cpu: no GPU; runs the tests that need none")
    path = Path(spec)
    if path.suffix == ".json" and path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict) and "verdicts" in data:
            try:
                return Runner(ReportClass.from_dict(data), f"audit {path}")
            except (ValueError, KeyError, TypeError) as error:
                raise InputError(f"runner {spec!r}: {error}") from None
    try:
        profile = load_profile(spec)
    except InputError as error:
        raise InputError(f"runner {spec!r}: {error}") from None
    stacked = with_assumed_stack(profile, probe_software().packages)
    assumed = {p: v for p, v in stacked.software.items() if p not in profile.software}
    how = f"profile {profile.name}"
    if assumed:
        how += " with assumed " + ", ".join(f"{p} {v}" for p, v in sorted(assumed.items()))
    return Runner(probe(profile=stacked), how)


def runner_report(spec: str) -> Report | None:
    """A runner's hardware (None for ``cpu``); kept for callers of the first version."""
    return runner_from_spec(spec).report


def route(
    export: Mapping[str, Any],
    runners: Mapping[str, Runner | Report | None],
    runs_on: Mapping[str, str] | None = None,
) -> Routing:
    """Each test to the first runner (in the given order) where nothing it asks for fails.

    A test without GPU requirements (``gpu_test`` false) goes to the first ``cpu`` runner
    when one is given; a ``cpu`` runner takes no other test.
    """
    from pytest_gpuinfer.fleet.export import requirements_of_record
    from pytest_gpuinfer.requirements.check import evaluate

    given = {label: _as_runner(value) for label, value in runners.items()}
    subsets: dict[str, list[str]] = {label: [] for label in given}
    unroutable: dict[str, list[str]] = {}
    from pytest_gpuinfer.probes.errors import InputError

    cpu_label = next((label for label, r in given.items() if r.cpu), None)
    for record in export.get("tests", []):
        nodeid = str(record["nodeid"])
        if not record.get("gpu_test", True) and cpu_label is not None:
            subsets[cpu_label].append(nodeid)
            continue
        try:
            requirements = requirements_of_record(record)
        except InputError as error:
            raise InputError(f"export test {nodeid!r} has a bad marker: {error}") from None
        reasons: list[str] = []
        for label, runner in given.items():
            if runner.report is None:
                reasons.append(f"{label}: a cpu runner takes only tests that need no GPU")
                continue
            why = evaluate(requirements, runner.report, mode=record.get("mode"))
            if not why:
                subsets[label].append(nodeid)
                break
            reasons.append(f"{label}: {'; '.join(why)}")
        else:
            unroutable[nodeid] = reasons
    return Routing(
        subsets,
        unroutable,
        {label: r.judged_by for label, r in given.items()},
        {label: (runs_on or {}).get(label, label) for label in given},
    )


def _as_runner(value: Runner | Report | None) -> Runner:
    if isinstance(value, Runner):
        return value
    if value is None:
        return Runner(None, "cpu")
    return Runner(value, f"profile {value.profile}" if value.profile else "audit")

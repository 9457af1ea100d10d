"""Route exported tests to CI runners: each test to the first runner whose hardware meets it.

A runner is described by a built-in profile name, a profile file, or the JSON of
``gpuinfer audit --json`` captured on it. The command is ``gpuinfer route``
(:mod:`pytest_gpuinfer.cli.route`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_gpuinfer.probes.report import Report


@dataclass
class Routing:
    """Which runner runs which test: ``routing.json`` (schema ``pytest-gpuinfer/routing`` 1)."""

    subsets: dict[str, list[str]]
    """Runner label -> node ids it runs (every label present, maybe empty)."""
    unroutable: dict[str, list[str]]
    """Node id -> why each runner cannot run it."""

    def matrix(self) -> dict[str, Any]:
        """GitHub Actions' matrix (``{"include": [...]}``): runners that got a test."""
        return {"include": [{"runner": k, "tests": len(v)} for k, v in self.subsets.items() if v]}

    def to_dict(self) -> dict[str, Any]:
        from pytest_gpuinfer.schemas import ROUTING

        return {**ROUTING.stamp(), "subsets": self.subsets, "unroutable": self.unroutable}

    @classmethod
    def from_dict(cls, data: object, source: object = "routing.json") -> Routing:
        from pytest_gpuinfer.schemas import ROUTING

        checked = ROUTING.check(data, source)
        return cls(dict(checked["subsets"]), dict(checked["unroutable"]))


def runner_report(spec: str) -> Report:
    """A runner's hardware: an audit JSON file, or a profile (name or file)."""
    from pytest_gpuinfer.probes import probe
    from pytest_gpuinfer.probes.errors import InputError
    from pytest_gpuinfer.probes.report import Report as ReportClass

    path = Path(spec)
    if path.suffix == ".json" and path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and "verdicts" in data:
                return ReportClass.from_dict(data)
        except ValueError:
            pass
    try:
        return probe(profile=spec)
    except InputError as error:
        raise InputError(f"runner {spec!r}: {error}") from None


def route(export: Mapping[str, Any], runners: Mapping[str, Report]) -> Routing:
    """Each test to the first runner (in the given order) where nothing it asks for fails."""
    from pytest_gpuinfer.fleet.export import requirements_of_record
    from pytest_gpuinfer.requirements.check import evaluate

    subsets: dict[str, list[str]] = {label: [] for label in runners}
    unroutable: dict[str, list[str]] = {}
    from pytest_gpuinfer.probes.errors import InputError

    for record in export.get("tests", []):
        try:
            requirements = requirements_of_record(record)
        except InputError as error:
            raise InputError(
                f"export test {record.get('nodeid')!r} has a bad marker: {error}"
            ) from None
        reasons: list[str] = []
        for label, report in runners.items():
            why = evaluate(requirements, report, mode=record.get("mode"))
            if not why:
                subsets[label].append(str(record["nodeid"]))
                break
            reasons.append(f"{label}: {'; '.join(why)}")
        else:
            unroutable[str(record["nodeid"])] = reasons
    return Routing(subsets, unroutable)

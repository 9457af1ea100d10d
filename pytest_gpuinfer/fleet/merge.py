"""Combine reports from a fleet: test x machine coverage, and mode x machine verdicts.

Reads the plugin's ``--gpuinfer-report`` JSON (schema 2, which names its machine) and
``gpuinfer audit --json`` reports. Bad input raises ``InputError`` with one line: a file
that is neither, another schema version, two reports from one machine, no file at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_gpuinfer.probes.errors import InputError
from pytest_gpuinfer.requirements.states import NOT_COLLECTED, RAN, SKIP_KINDS, state_of
from pytest_gpuinfer.schemas import MERGE, REPORT

if TYPE_CHECKING:
    from pytest_gpuinfer.probes.report import Report


@dataclass(frozen=True)
class Machine:
    """One machine of the fleet, as a report names it."""

    name: str
    source: str
    """The file it came from."""
    gpu_summary: str
    profile: str | None = None


@dataclass(frozen=True)
class Cell:
    outcome: str
    reason: str | None = None
    skip_kind: str | None = None
    """"would run" or "cannot run" when the plugin skipped the test (report ``state``)."""

    @property
    def state(self) -> str:
        """The cell's state (``requirements.states``): an outcome, "would run", "cannot run"."""
        return state_of(self.outcome, self.skip_kind)


@dataclass
class TestRun:
    """One plugin report: each test's outcome on one machine."""

    machine: Machine
    outcomes: dict[str, Cell]
    exitstatus: int | None = None


@dataclass
class AuditRun:
    """One audit report: each mode's verdict (and the model's fit) on one machine."""

    machine: Machine
    verdicts: dict[str, Cell]
    fits: dict[str, Cell] = field(default_factory=dict)
    model: str | None = None


@dataclass
class Coverage:
    machines: list[Machine]
    tests: list[str]
    cells: dict[tuple[str, str], Cell]
    """(nodeid, machine name) -> outcome; absent means not collected there."""

    def cell(self, nodeid: str, machine: str) -> Cell:
        return self.cells.get((nodeid, machine), Cell(NOT_COLLECTED))

    @property
    def ran_nowhere(self) -> list[str]:
        return [t for t in self.tests if not self.ran_on(t)]

    def ran_on(self, nodeid: str) -> list[str]:
        """Machines where the test's body ran (passed, failed, errored, xfailed, xpassed)."""
        return [m.name for m in self.machines if self.cell(nodeid, m.name).outcome in RAN]


@dataclass
class ModeMatrix:
    machines: list[Machine]
    modes: list[str]
    verdicts: dict[tuple[str, str], Cell]
    fits: dict[tuple[str, str], Cell]
    models: list[str]

    def can_run(self, mode: str, machine: str) -> bool:
        """The mode is supported or degraded there, and the model fits when one was given."""
        verdict = self.verdicts.get((mode, machine))
        if verdict is None or verdict.outcome not in ("supported", "degraded"):
            return False
        fit = self.fits.get((mode, machine))
        return fit is None or fit.outcome in ("supported", "degraded")

    def runnable_on(self, mode: str) -> list[str]:
        return [m.name for m in self.machines if self.can_run(mode, m.name)]


def groups_by_gpu(machines: Iterable[Machine]) -> dict[str, list[str]]:
    """GPU summary -> machine names, in first-seen order."""
    groups: dict[str, list[str]] = {}
    for machine in machines:
        groups.setdefault(machine.gpu_summary, []).append(machine.name)
    return groups


# -- reading -------------------------------------------------------------------------------


def split_argument(argument: str) -> tuple[str | None, Path]:
    """``NAME=PATH`` names a machine; a plain path is taken as is."""
    name, sep, rest = argument.partition("=")
    if sep and name and "/" not in name and not Path(argument).exists():
        if not rest.strip():
            raise InputError(f"report {argument!r} names machine {name!r} but no file")
        return name, Path(rest)
    return None, Path(argument)


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise InputError(
            f"{path} is not UTF-8 text (byte {error.object[error.start]:#04x} at offset "
            f"{error.start}); expected a --gpuinfer-report or `gpuinfer audit --json` report"
        ) from None
    try:
        return json.loads(text)
    except ValueError:
        raise InputError(
            f"{path} is not JSON; expected a --gpuinfer-report or `gpuinfer audit --json` report"
        ) from None


def _gpu_summary(report: Report) -> str:
    from collections import Counter

    labels: Counter[str] = Counter()
    for gpu in report.gpus:
        name = gpu.name or "unknown GPU"
        capability = gpu.compute_capability
        labels[f"{name} ({capability[0]}.{capability[1]})" if capability else name] += 1
    return ", ".join(f"{n} x {label}" for label, n in labels.items()) or "no GPU"


def _test_run(path: Path, data: Mapping[str, Any], name: str | None) -> TestRun:
    # Reports written before the ``schema`` key was added carry only the version.
    version = data.get("schema_version")
    if version != REPORT.version:
        raise InputError(
            f"{path} is a pytest-gpuinfer report of schema_version {version!r}; expected "
            f"{REPORT.version!r} (re-run the suite with this pytest-gpuinfer)"
        )
    try:
        REPORT.check({"schema": REPORT.schema, **data}, path)
    except ValueError as error:
        raise InputError(str(error)) from None
    machine_data = data["machine"]
    machine = Machine(
        name=name or str(machine_data.get("name") or path.stem),
        source=str(path),
        gpu_summary=str(machine_data.get("gpu_summary") or "no GPU"),
        profile=machine_data.get("profile"),
    )
    outcomes: dict[str, Cell] = {}
    for test in data.get("tests") or []:
        nodeid = test.get("nodeid")
        if not isinstance(nodeid, str):
            raise InputError(f"{path}: a test entry has no nodeid; the report is damaged")
        # ``state`` joined schema 2 later; a report without it shows its skips as skips.
        state = test.get("state")
        kind = state if state in SKIP_KINDS else None
        outcomes[nodeid] = Cell(test.get("outcome") or "not run", test.get("skip_reason"), kind)
    return TestRun(machine, outcomes, data.get("exitstatus"))


def _audit_report(path: Path, data: Mapping[str, Any]) -> Report:
    """The audit JSON through its one reader, ``Report.from_dict``; InputError if damaged."""
    from pytest_gpuinfer.probes.report import SCHEMA_VERSION, Report

    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise InputError(
            f"{path} is a `gpuinfer audit --json` report of schema_version {version!r}; "
            f"expected {SCHEMA_VERSION!r}"
        )
    from pytest_gpuinfer.schemas import AUDIT_SCHEMA_FILE
    from pytest_gpuinfer.schemas.validate import first_error, schema_file

    error = first_error(data, schema_file(AUDIT_SCHEMA_FILE))
    if error is not None:
        raise InputError(f"{path} is a damaged `gpuinfer audit --json` report: {error}")
    try:
        return Report.from_dict(dict(data))
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise InputError(f"{path}: a damaged `gpuinfer audit --json` report ({error})") from None


def _audit_run(path: Path, report: Report, name: str | None) -> AuditRun:
    profile = report.profile
    machine = Machine(
        name=name or (f"profile={profile}" if profile else path.stem),
        source=str(path),
        gpu_summary=_gpu_summary(report),
        profile=profile,
    )
    verdicts = {mode: Cell(v.status.value, v.reason or None) for mode, v in report.verdicts.items()}
    # Report.memory_fit stays a plain dict in probes (MemoryFit.to_dict's shape).
    fit = report.memory_fit or {}
    fits = {
        mode: Cell(str(f.get("status")), f.get("reason") or None)
        for mode, f in (fit.get("fits") or {}).items()
    }
    model = (fit.get("estimate") or {}).get("source")
    return AuditRun(machine, verdicts, fits, model)


def _fingerprint(report: Report) -> str | None:
    """What makes two audit reports the same machine: its GPUs' UUIDs, its profile."""
    uuids = sorted(str(g.uuid) for g in report.gpus if g.uuid)
    if report.profile:
        return f"profile {report.profile}"
    if uuids:
        return "GPUs " + ",".join(uuids)
    return None


def load(arguments: Sequence[str]) -> tuple[list[TestRun], list[AuditRun]]:
    """Read every report; InputError names the first bad one."""
    if not arguments:
        raise InputError(
            "no report given; expected one or more --gpuinfer-report or "
            "`gpuinfer audit --json` files"
        )
    runs: list[TestRun] = []
    audits: list[AuditRun] = []
    seen: dict[str, str] = {}
    for argument in arguments:
        name, path = split_argument(argument)
        if not argument.strip():
            raise InputError(
                f"report path {argument!r} is empty; expected a --gpuinfer-report or "
                "`gpuinfer audit --json` file"
            )
        data = _read_json(path)
        if isinstance(data, Mapping) and "tests" in data and "probe" in data:
            run = _test_run(path, data, name)
            key, machine = f"tests {run.machine.name}", run.machine
            runs.append(run)
        elif isinstance(data, Mapping) and "verdicts" in data and "software" in data:
            report = _audit_report(path, data)
            audit = _audit_run(path, report, name)
            fingerprint = None if name else _fingerprint(report)
            key, machine = f"audit {fingerprint or audit.machine.name}", audit.machine
            audits.append(audit)
        else:
            raise InputError(
                f"{path} is not a pytest-gpuinfer report: expected the JSON of "
                "--gpuinfer-report or of `gpuinfer audit --json`"
            )
        earlier = seen.get(key)
        if earlier is not None:
            raise InputError(
                f"{earlier} and {path} are both from machine {machine.name!r}; give one "
                "report per machine (name runs apart with NAME=PATH or --gpuinfer-machine)"
            )
        seen[key] = str(path)
    return runs, audits


# -- combining -----------------------------------------------------------------------------


def coverage(runs: Sequence[TestRun]) -> Coverage:
    tests: dict[str, None] = {}
    cells: dict[tuple[str, str], Cell] = {}
    for run in runs:
        for nodeid, cell in run.outcomes.items():
            tests.setdefault(nodeid, None)
            cells[(nodeid, run.machine.name)] = cell
    return Coverage([r.machine for r in runs], list(tests), cells)


def mode_matrix(audits: Sequence[AuditRun]) -> ModeMatrix:
    from pytest_gpuinfer.probes.modes import MODES

    judged = {mode for a in audits for mode in a.verdicts}
    modes = [m for m in MODES if m in judged] + sorted(judged - set(MODES))
    verdicts = {(mode, a.machine.name): c for a in audits for mode, c in a.verdicts.items()}
    fits = {(mode, a.machine.name): c for a in audits for mode, c in a.fits.items()}
    models = list(dict.fromkeys(a.model for a in audits if a.model))
    return ModeMatrix([a.machine for a in audits], modes, verdicts, fits, models)


def _machine_dict(machine: Machine) -> dict[str, Any]:
    return {
        "name": machine.name,
        "source": machine.source,
        "gpu_summary": machine.gpu_summary,
        "profile": machine.profile,
    }


def to_json(cov: Coverage | None, matrix: ModeMatrix | None) -> dict[str, Any]:
    """The merged view as one JSON document (schema ``pytest-gpuinfer/merge`` 1)."""
    data: dict[str, Any] = dict(MERGE.stamp())
    if cov is not None:
        data["coverage"] = {
            "machines": [_machine_dict(m) for m in cov.machines],
            "machines_by_gpu": groups_by_gpu(cov.machines),
            "tests": [
                {
                    "nodeid": t,
                    "ran_on": cov.ran_on(t),
                    "machines": {
                        m.name: {
                            "outcome": cov.cell(t, m.name).outcome,
                            "state": cov.cell(t, m.name).state,
                            "reason": cov.cell(t, m.name).reason,
                        }
                        for m in cov.machines
                    },
                }
                for t in cov.tests
            ],
            "ran_nowhere": cov.ran_nowhere,
        }
    if matrix is not None:
        data["modes"] = {
            "machines": [_machine_dict(m) for m in matrix.machines],
            "machines_by_gpu": groups_by_gpu(matrix.machines),
            "models": matrix.models,
            "modes": {
                mode: {
                    "runnable_on": matrix.runnable_on(mode),
                    "machines": {
                        m.name: {
                            "status": _outcome(matrix.verdicts.get((mode, m.name))),
                            "reason": _reason(matrix.verdicts.get((mode, m.name))),
                            "fit": _outcome(matrix.fits.get((mode, m.name))),
                            "fit_reason": _reason(matrix.fits.get((mode, m.name))),
                        }
                        for m in matrix.machines
                    },
                }
                for mode in matrix.modes
            },
        }
    return data


def _outcome(cell: Cell | None) -> str | None:
    return None if cell is None else cell.outcome


def _reason(cell: Cell | None) -> str | None:
    return None if cell is None else cell.reason

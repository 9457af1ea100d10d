"""What the plugin prints and writes: header, summary, JSON report, JUnit and benchmark stamps."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_gpuinfer.probes.report import GPUInfo, Report


def _gpu_line(gpu: GPUInfo) -> str:
    from pytest_gpuinfer.probes.render import gpu_line

    return "gpuinfer: " + gpu_line(gpu, detail=False)


def stack_line(report: Report) -> str:
    from pytest_gpuinfer.probes.render import stack_line as render_stack

    return "gpuinfer: stack: " + render_stack(report.software, report.driver.driver_version)


def modes_line(report: Report) -> str:
    items = [f"{mode} {verdict.status.value}" for mode, verdict in report.verdicts.items()]
    return "gpuinfer: modes: " + ", ".join(items)


def header_lines(report: Report, *, strict: bool, worker_note: str | None = None) -> list[str]:
    """The session header: GPUs with compute capability and free memory, stack, verdicts."""
    from pytest_gpuinfer.requirements.check import usable_gpus

    gpus = usable_gpus(report)
    if report.simulated:
        first = (
            f"gpuinfer: simulated profile {report.profile}: {len(gpus)} GPU"
            f"{'s' if len(gpus) != 1 else ''} (not this machine's hardware; tests that would "
            "run on it are skipped)"
        )
    elif gpus:
        shown = report.visible_devices if report.visible_devices is not None else "unset"
        first = (
            f"gpuinfer: {len(gpus)} GPU{'s' if len(gpus) != 1 else ''} visible "
            f"(CUDA_VISIBLE_DEVICES={shown})"
        )
    else:
        why = report.gpu_unavailable_reason or "none visible"
        first = f"gpuinfer: no GPU: {why}"
    if strict:
        first += "; strict: unmet requirements fail"
    lines = [first]
    lines.extend(_gpu_line(gpu) for gpu in gpus)
    lines.append(stack_line(report))
    lines.append(modes_line(report))
    if worker_note:
        lines.append(f"gpuinfer: {worker_note}")
    return lines


@dataclass
class TestRecord:
    """One test as the summary and the JSON report see it."""

    nodeid: str
    mode: str | None = None
    requirements: dict[str, Any] = field(default_factory=dict)
    gated: bool = False
    outcome: str | None = None
    skip_reason: str | None = None
    worker: str | None = None
    visible_devices: str | None = None
    skip_kind: str | None = None
    """"would run" or "cannot run" when the plugin itself skipped the test."""

    @property
    def state(self) -> str:
        from pytest_gpuinfer.requirements.states import state_of

        return state_of(self.outcome, self.skip_kind)

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodeid": self.nodeid,
            "outcome": self.outcome,
            "state": self.state,
            "mode": self.mode,
            "requirements": self.requirements,
            "skip_reason": self.skip_reason,
            "worker": self.worker,
            "visible_devices": self.visible_devices,
        }


def skip_reason_of(longrepr: object) -> str | None:
    """The reason text of a skipped report's longrepr (a (path, line, "Skipped: ...") tuple)."""
    if isinstance(longrepr, (tuple, list)) and len(longrepr) == 3:
        text = str(longrepr[2])
    elif longrepr is None:
        return None
    else:
        text = str(longrepr)
    return text.removeprefix("Skipped: ")


class Recorder:
    """Collects per-test outcomes from the reports (which is all a controller gets)."""

    def __init__(self) -> None:
        self.records: dict[str, TestRecord] = {}

    def add(
        self,
        *,
        nodeid: str,
        when: str,
        outcome: str,
        longrepr: object,
        wasxfail: bool,
        data: Mapping[str, Any] | None,
    ) -> None:
        record = self.records.get(nodeid)
        if record is None:
            record = self.records[nodeid] = TestRecord(nodeid)
        if data:
            record.mode = data.get("mode")
            record.requirements = dict(data.get("requirements") or {})
            record.gated = bool(data.get("gpu_test"))
            record.worker = data.get("worker")
            record.visible_devices = data.get("visible_devices")
        if outcome == "skipped":
            if when == "call" and wasxfail:
                record.outcome = "xfailed"
            elif record.outcome is None or when == "call":
                record.outcome = "skipped"
                record.skip_reason = skip_reason_of(longrepr)
                record.skip_kind = (data or {}).get("skip_kind")
        elif outcome == "failed":
            if when == "call":
                record.outcome = "xpassed" if wasxfail else "failed"
            elif record.outcome in (None, "passed", "xfailed", "xpassed"):
                record.outcome = "error"
        elif when == "call":
            record.outcome = "xpassed" if wasxfail else "passed"

    def gated(self) -> list[TestRecord]:
        return [r for r in self.records.values() if r.gated]


_COLUMNS = ("passed", "failed", "skipped", "error", "xfailed", "xpassed")


def summary_lines(records: Iterable[TestRecord], modes_order: Iterable[str]) -> list[str]:
    """Per mode: counts by outcome; then the distinct skip reasons with counts."""
    records = list(records)
    by_mode: dict[str, Counter[str]] = {}
    for record in records:
        by_mode.setdefault(record.mode or "-", Counter())[record.outcome or "not run"] += 1
    order = [m for m in modes_order if m in by_mode] + sorted(
        m for m in by_mode if m not in modes_order and m != "-"
    )
    if "-" in by_mode:
        order.append("-")
    shown = [
        c
        for c in _COLUMNS
        if c in ("passed", "failed", "skipped") or any(by_mode[m][c] for m in order)
    ]
    if "not run" in {k for m in order for k in by_mode[m]}:
        shown.append("not run")
    width = max([len("mode"), *(len(m) for m in order)])
    lines = ["mode".ljust(width) + "".join(f" {c:>8}" for c in shown)]
    for mode in order:
        counts = by_mode[mode]
        lines.append(mode.ljust(width) + "".join(f" {counts[c]:>8}" for c in shown))
    reasons = Counter(r.skip_reason for r in records if r.outcome == "skipped" and r.skip_reason)
    if reasons:
        lines.append("skip reasons:")
        for reason, count in sorted(reasons.items(), key=lambda item: (-item[1], item[0])):
            lines.append(f"{count:>5} x {reason}")
    return lines


def write_json_atomically(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON (never NaN) through a temporary file beside ``path``, renamed over it."""
    from pytest_gpuinfer.outputs import write_json

    write_json(path, data)


def closing_lines(
    gated: list[TestRecord],
    simulated: str | None,
    collected: tuple[int, int] | None,
    report_path: Path | None,
) -> list[str]:
    """The "gpuinfer summary" section: per-mode counts, or what a --collect-only found."""
    from pytest_gpuinfer.probes.report import MODES

    lines = []
    if simulated is not None:
        lines.append(
            f"simulated profile {simulated}: gating as on that GPU, GPU tests not executed"
        )
    if collected is not None:
        lines.append(collect_only_line(*collected))
    elif not gated:
        lines.append("no test used the gpuinfer marker or fixtures")
    else:
        lines.extend(summary_lines(gated, MODES))
    if report_path is not None:
        lines.append(f"gpuinfer report: {report_path}")
    return lines


def collect_only_line(total: int, gpu_tests: int) -> str:
    """The summary of a ``--collect-only`` run, which has no outcome to count."""
    if not gpu_tests:
        return (
            f"collect-only: none of the {total} collected tests uses the gpuinfer marker "
            "or fixtures"
        )
    return (
        f"collect-only: {gpu_tests} of the {total} collected tests are GPU tests (the gpuinfer "
        "marker or fixtures); none ran"
    )


def machine_identity(report: Report, name: str | None = None) -> dict[str, Any]:
    """Who ran the suite: a name that tells machines apart, and the GPUs it judged by.

    The default name is the host name, plus ``profile=NAME`` for a simulated profile and
    ``CUDA_VISIBLE_DEVICES=...`` when set, so two runs on one host under different
    profiles or GPU subsets count as two machines. ``--gpuinfer-machine`` overrides it.
    """
    import socket

    from pytest_gpuinfer.requirements.check import usable_gpus

    hostname = socket.gethostname()
    if name is None:
        parts = [hostname]
        if report.profile:
            parts.append(f"profile={report.profile}")
        if report.visible_devices is not None and not report.simulated:
            parts.append(f"CUDA_VISIBLE_DEVICES={report.visible_devices}")
        name = " ".join(parts)
    gpus = usable_gpus(report)
    labels = Counter(gpu.label for gpu in gpus)
    summary = ", ".join(f"{n} x {label}" for label, n in labels.items()) or "no GPU"
    return {
        "name": name,
        "hostname": hostname,
        "profile": report.profile,
        "visible_devices": report.visible_devices,
        "gpu_summary": summary,
        "gpus": [
            {
                "name": gpu.name,
                "uuid": gpu.uuid,
                "compute_capability": gpu.to_dict().get("compute_capability"),
                "total_memory_bytes": gpu.total_memory_bytes,
            }
            for gpu in gpus
        ],
    }


def json_report(
    report: Report,
    settings: Mapping[str, Any],
    records: Iterable[TestRecord],
    exitstatus: int,
) -> dict[str, Any]:
    tests = [r.to_dict() for r in records]
    outcomes = Counter(t["outcome"] or "not run" for t in tests)
    from pytest_gpuinfer.schemas import REPORT

    return {
        **REPORT.stamp(),
        "machine": machine_identity(report, settings.get("machine")),
        "exitstatus": int(exitstatus),
        "settings": {k: v for k, v in settings.items() if k != "sources"},
        "probe": report.to_dict(),
        "summary": dict(sorted(outcomes.items())),
        "tests": tests,
    }


def hardware_properties(report: Report) -> list[tuple[str, str]]:
    """Flat name/value pairs describing the hardware (JUnit properties, benchmark info)."""
    from pytest_gpuinfer.requirements.check import usable_gpus

    gpus = usable_gpus(report)
    props: list[tuple[str, str]] = []
    if report.profile:
        props.append(("gpuinfer_profile", report.profile))
    props.append(("gpuinfer_gpu_count", str(len(gpus))))
    for i, gpu in enumerate(gpus):
        props.append((f"gpuinfer_gpu{i}", _gpu_line(gpu).split(": ", 2)[-1]))
    if report.driver.driver_version:
        props.append(("gpuinfer_driver", report.driver.driver_version))
    from pytest_gpuinfer.probes.render import STACK_PACKAGES

    for package in STACK_PACKAGES:
        props.append((f"gpuinfer_{package}", report.software.packages.get(package) or "none"))
    for mode, verdict in report.verdicts.items():
        props.append((f"gpuinfer_mode_{mode}", verdict.status.value))
    return props


def machine_info(report: Report) -> dict[str, Any]:
    """pytest-benchmark's machine_info entry."""
    from pytest_gpuinfer.requirements.check import usable_gpus

    return {
        "profile": report.profile,
        "gpus": [
            {
                "name": gpu.name,
                "uuid": gpu.uuid,
                "compute_capability": gpu.to_dict().get("compute_capability"),
                "total_memory_bytes": gpu.total_memory_bytes,
            }
            for gpu in usable_gpus(report)
        ],
        "driver": report.driver.driver_version,
        "cuda_driver": report.driver.cuda_driver_version,
        "torch_cuda": report.software.torch_cuda,
        "packages": dict(report.software.packages),
        "modes": {mode: v.status.value for mode, v in report.verdicts.items()},
    }

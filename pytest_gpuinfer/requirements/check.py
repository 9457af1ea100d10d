"""Whether a report meets a mark's requirements: one reason per unmet requirement.

Each reason names the requirement, what was found and, for a mode, the rule that
decided it. Nothing here imports pytest hooks.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from pytest_gpuinfer.probes.errors import InputError
from pytest_gpuinfer.probes.report import GPUInfo, Report, Status
from pytest_gpuinfer.requirements.marker import (
    DEFAULT_WORKLOAD_MODE,
    DeclaredWorkload,
    Requirements,
)

if TYPE_CHECKING:
    from pytest_gpuinfer.probes.memory_workload import Workload, WorkloadEstimate


def usable_gpus(report: Report) -> list[GPUInfo]:
    """The GPUs a test process can use, in CUDA ordinal order."""
    if report.simulated:
        return list(report.gpus)
    visible = [gpu for gpu in report.gpus if gpu.cuda_ordinal is not None]
    return sorted(visible, key=lambda gpu: gpu.cuda_ordinal or 0)


def _gpu_label(gpu: GPUInfo) -> str:
    return f"GPU {gpu.cuda_ordinal if gpu.cuda_ordinal is not None else gpu.index} {gpu.label}"


def _no_gpu(report: Report, where: str | None) -> str:
    if where:
        return f"no GPU: {where}"
    if report.gpu_unavailable_reason:
        return f"no GPU: {report.gpu_unavailable_reason}"
    return "no GPU"


def mode_reason(report: Report, mode: str) -> str | None:
    """Why ``mode`` cannot run according to the report, or None when it can."""
    verdict = report.verdicts.get(mode)
    if verdict is None:
        return f"mode {mode} was not judged by the probe"
    if verdict.ok:
        return None
    deciding = [f for f in verdict.findings if f.status is verdict.status] or [
        f for f in verdict.findings if f.status is not Status.SUPPORTED
    ]
    message = "; ".join(f.message for f in deciding) or verdict.reason or "no reason given"
    rules = ", ".join(dict.fromkeys(f.rule_id for f in deciding))
    where = " on simulated " + report.profile if report.profile else ""
    suffix = f" [rule {rules}]" if rules else ""
    return f"mode {mode} is {verdict.status.value}{where}: {message}{suffix}"


def _installed_version(name: str, report: Report) -> str | None:
    """A distribution's version: the report's view first (a profile may override it),
    then this machine's installed metadata."""
    from packaging.utils import canonicalize_name

    wanted = canonicalize_name(name)
    for key, version in report.software.packages.items():
        if canonicalize_name(key) == wanted:
            return version
    return _local_version(wanted)


@functools.cache
def _local_version(name: str) -> str | None:
    # Cached: a marker naming a package outside the report is evaluated once per test.
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def evaluate(
    requirements: Requirements,
    report: Report,
    *,
    mode: str | None = None,
    no_gpu_reason: str | None = None,
) -> list[str]:
    """One reason per unmet requirement; empty when the test may run.

    ``mode`` is the test's ``inference_mode`` parameter: then only that mode is judged,
    not the marker's whole list. ``no_gpu_reason`` explains an empty GPU list (e.g. an
    xdist worker that owns none).
    """
    from pytest_gpuinfer.probes.architectures import tensor_core_precisions
    from pytest_gpuinfer.probes.memory_units import format_bytes

    reasons: list[str] = []
    # A misspelt workload model is named first, before anything about the hardware.
    problem = (
        None if requirements.workload is None else declared_model_problem(requirements.workload)
    )
    if problem:
        reasons.append(problem)
    for judged in (mode,) if mode is not None else requirements.modes:
        reason = mode_reason(report, judged)
        if reason:
            reasons.append(reason)

    gpus = usable_gpus(report)
    per_gpu = (
        requirements.workload is not None
        or requirements.compute_capability is not None
        or requirements.free_memory_bytes is not None
        or requirements.total_memory_bytes is not None
        or bool(requirements.tensor_cores)
    )
    if not gpus and (requirements.gpus is not None or per_gpu):
        wanted: list[str] = []
        if requirements.gpus is not None:
            wanted.append(f"gpus={requirements.gpus}")
        if per_gpu:
            wanted.append(_describe_per_gpu(requirements))
        reasons.append(f"needs {', '.join(wanted)}; found {_no_gpu(report, no_gpu_reason)}")
    elif requirements.gpus is not None and len(gpus) < requirements.gpus:
        found = f"{len(gpus)} GPU{'s' if len(gpus) != 1 else ''}"
        if no_gpu_reason:
            found += f" ({no_gpu_reason})"
        reasons.append(f"needs gpus={requirements.gpus}; found {found}")

    if requirements.workload is not None and gpus and not problem:
        judged_modes = (mode,) if mode is not None else requirements.modes
        for judged in judged_modes or (DEFAULT_WORKLOAD_MODE,):
            reason = workload_reason(requirements.workload, judged, gpus[0])
            if reason:
                reasons.append(reason)

    checked = gpus[: requirements.gpus_needed] if per_gpu else []
    for gpu in checked:
        spec = requirements.compute_capability
        if spec is not None:
            if gpu.compute_capability is None:
                why = gpu.unknown.get("compute_capability", "not read")
                reasons.append(
                    f"needs compute_capability {spec.text}; {_gpu_label(gpu)} has an unknown "
                    f"compute capability ({why})"
                )
            elif not spec.contains(gpu.compute_capability):
                reasons.append(f"needs compute_capability {spec.text}; found {_gpu_label(gpu)}")
        for key, needed, have in (
            ("free_memory", requirements.free_memory_bytes, gpu.free_memory_bytes),
            ("total_memory", requirements.total_memory_bytes, gpu.total_memory_bytes),
        ):
            if needed is None:
                continue
            label = key.split("_")[0]
            if have is None:
                why = gpu.unknown.get(f"{key}_bytes", "not read")
                reasons.append(
                    f"needs {key} {format_bytes(needed)}; {_gpu_label(gpu)} {label} memory "
                    f"is unknown ({why})"
                )
            elif have < needed:
                reasons.append(
                    f"needs {key} {format_bytes(needed)}; found {format_bytes(have)} {label} "
                    f"on {_gpu_label(gpu)}"
                )
        if requirements.tensor_cores:
            if gpu.compute_capability is None:
                reasons.append(
                    f"needs tensor_cores {', '.join(requirements.tensor_cores)}; "
                    f"{_gpu_label(gpu)} has an unknown compute capability"
                )
            else:
                has = tensor_core_precisions(gpu.compute_capability, gpu.name)
                if gpu.has_tensor_cores is False:
                    has = ()
                missing = [p for p in requirements.tensor_cores if p not in has]
                if missing:
                    have_text = (
                        f"has tensor cores for {', '.join(has)} (missing {', '.join(missing)})"
                        if has
                        else "has no tensor cores"
                    )
                    reasons.append(
                        f"needs tensor_cores {', '.join(requirements.tensor_cores)}; "
                        f"{_gpu_label(gpu)} {have_text}"
                    )

    if requirements.packages:
        from packaging.specifiers import SpecifierSet
        from packaging.version import InvalidVersion, Version

        for name, specifier in requirements.packages.items():
            version = _installed_version(name, report)
            shown = f"{name}{specifier}" if specifier else name
            if version is None:
                reasons.append(f"needs package {shown}; found it not installed")
                continue
            try:
                parsed = Version(version)
            except InvalidVersion:
                reasons.append(f"needs package {shown}; found unparsable version {version!r}")
                continue
            if not SpecifierSet(specifier).contains(parsed, prereleases=True):
                reasons.append(f"needs package {shown}; found {name} {version}")
    return reasons


@functools.lru_cache(maxsize=64)
def _predicted(model: str, mode: str, sizes: Workload) -> WorkloadEstimate:
    # Once per (model, mode, sizes): suites mark many tests with the same workload. The
    # probes' call still takes the sizes as numbers (memory_fit.estimate_workload_of).
    from pytest_gpuinfer.probes.memory_fit import estimate_workload_of

    return estimate_workload_of(model, mode, sizes.batch_size, sizes.seq_len, sizes.new_tokens)


def declared_model_problem(workload: DeclaredWorkload) -> str | None:
    """Why a mark's ``workload=`` model cannot be read (a misspelt path), or None.

    Checked before the hardware, so a typo is named even on a machine without a GPU.
    """
    from pytest_gpuinfer.probes.sources import resolve_config_path

    try:
        resolve_config_path(workload.model)
    except InputError as error:
        return f"workload={{'model': {workload.model!r}, ...}}: {error}"
    return None


def workload_reason(workload: DeclaredWorkload, mode: str, gpu: GPUInfo) -> str | None:
    """Why ``workload`` would not fit ``gpu`` in ``mode`` (None when it fits), with figures."""
    from pytest_gpuinfer.probes.memory_units import format_bytes

    sizes = workload.sizes
    what = (
        f"workload {sizes.batch_size} x {sizes.seq_len} + {sizes.new_tokens} new tokens of "
        f"{workload.model} in {mode}"
    )
    try:
        predicted = _predicted(workload.model, mode, sizes)
    except InputError as error:
        return f"{what} cannot be estimated: {error}"
    free = gpu.free_memory_bytes
    if free is None:
        why = gpu.unknown.get("free_memory_bytes", "not read")
        peak = format_bytes(predicted.peak_bytes)
        return f"{what} needs {peak}; {_gpu_label(gpu)} free memory is unknown ({why})"
    if predicted.peak_bytes <= free:
        return None
    parts = ", ".join(
        f"{name.replace('_', ' ')} {format_bytes(size)}"
        for name, size in predicted.parts().items()
        if size
    )
    return (
        f"{what} needs {format_bytes(predicted.peak_bytes)} at its {predicted.peak_moment} "
        f"peak ({parts}); found {format_bytes(free)} free on {_gpu_label(gpu)}"
    )


def _describe_per_gpu(requirements: Requirements) -> str:
    from pytest_gpuinfer.probes.memory_units import format_bytes

    parts = []
    if requirements.workload is not None:
        parts.append(f"workload of {requirements.workload.model}")
    if requirements.compute_capability is not None:
        parts.append(f"compute_capability {requirements.compute_capability.text}")
    for key, needed in (
        ("free_memory", requirements.free_memory_bytes),
        ("total_memory", requirements.total_memory_bytes),
    ):
        if needed is None:
            continue
        written = requirements.raw.get(key)
        # As written when it has a unit ("16GB"); a bare number is bytes, so say so ("8 B").
        if isinstance(written, str) and not written.strip().isdigit():
            parts.append(f"{key} {written.strip()}")
        else:
            parts.append(f"{key} {format_bytes(needed)}")
    if requirements.tensor_cores:
        parts.append(f"tensor_cores {', '.join(requirements.tensor_cores)}")
    return ", ".join(parts)

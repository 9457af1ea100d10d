"""What a ``@pytest.mark.gpuinfer(...)`` mark asks for, and whether a report meets it.

Parsing validates every keyword and value (``RequirementError`` names the bad one);
evaluation returns one reason per unmet requirement, naming the requirement, what was
found and, for a mode, the rule that decided it. Nothing here imports pytest hooks.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_gpuinfer.probes.errors import InputError
from pytest_gpuinfer.probes.report import MODES, GPUInfo, Report, Status

KEYWORDS: tuple[str, ...] = (
    "modes",
    "gpus",
    "compute_capability",
    "free_memory",
    "total_memory",
    "tensor_cores",
    "packages",
    "workload",
)
"""Every keyword the marker takes."""

WORKLOAD_KEYS: tuple[str, ...] = ("model", "batch_size", "seq_len", "new_tokens")
"""What ``workload={...}`` takes; ``model`` is required, the rest default as the audit."""

DEFAULT_WORKLOAD_MODE = "fp16"
"""The mode a workload is judged in when neither the test nor the mark names one."""

_CLAUSE = re.compile(r"\s*(>=|<=|==|!=|>|<)\s*(\d+)(?:\.(\d+))?\s*")


class RequirementError(InputError):
    """A marker keyword or value that is not understood; the message names it."""


@dataclass(frozen=True)
class CapabilitySpec:
    """A compute capability constraint such as ``>=8.0,<9.0``."""

    text: str
    clauses: tuple[tuple[str, tuple[int, int]], ...]

    def contains(self, capability: tuple[int, int]) -> bool:
        return all(_compare(capability, op, bound) for op, bound in self.clauses)


def _compare(value: tuple[int, int], op: str, bound: tuple[int, int]) -> bool:
    if op == ">=":
        return value >= bound
    if op == "<=":
        return value <= bound
    if op == ">":
        return value > bound
    if op == "<":
        return value < bound
    if op == "==":
        return value == bound
    return value != bound


def parse_capability_spec(text: object) -> CapabilitySpec:
    """Parse ``">=7.5"``, ``"==8.0"`` or ``">=8.0,<9.0"``; RequirementError otherwise."""
    expected = "expected comparisons like '>=7.5', '==8.0' or '>=8.0,<9.0'"
    if not isinstance(text, str):
        raise RequirementError(f"compute_capability={text!r} is not a string; {expected}")
    clauses: list[tuple[str, tuple[int, int]]] = []
    for part in text.split(","):
        match = _CLAUSE.fullmatch(part)
        if match is None:
            raise RequirementError(f"compute_capability={text!r} is not understood; {expected}")
        op, major, minor = match.groups()
        clauses.append((op, (int(major), int(minor or 0))))
    return CapabilitySpec(text=text.replace(" ", ""), clauses=tuple(clauses))


@dataclass(frozen=True)
class Requirements:
    """The merged requirements of one test (empty fields ask for nothing)."""

    modes: tuple[str, ...] = ()
    gpus: int | None = None
    compute_capability: CapabilitySpec | None = None
    free_memory_bytes: int | None = None
    total_memory_bytes: int | None = None
    tensor_cores: tuple[str, ...] = ()
    packages: Mapping[str, str] = field(default_factory=dict)
    workload: Mapping[str, Any] | None = None
    """{"model": path, "batch_size": B, "seq_len": S, "new_tokens": N}, validated."""
    raw: Mapping[str, Any] = field(default_factory=dict)
    """The keywords as written (merged), for reports."""
    marked: bool = False
    """True when at least one gpuinfer mark applies to the test."""

    @property
    def gpus_needed(self) -> int:
        """How many GPUs the per-GPU requirements are checked on (at least one)."""
        return self.gpus or 1

    @property
    def asks_for_gpu(self) -> bool:
        return (
            self.gpus is not None
            or self.compute_capability is not None
            or self.free_memory_bytes is not None
            or self.total_memory_bytes is not None
            or bool(self.tensor_cores)
            or self.workload is not None
        )

    @property
    def declared_memory_bytes(self) -> int | None:
        """The GPU memory the test declares it may use: the largest of its memory claims.

        GPU sharing under xdist (``--gpuinfer-share``) and the requirements export read
        this one figure. A new claim (a workload estimate) joins the tuple below.
        """
        claims = [c for c in (self.free_memory_bytes, self.total_memory_bytes) if c is not None]
        return max(claims) if claims else None

    def to_dict(self) -> dict[str, Any]:
        return {str(k): _jsonable(v) for k, v in self.raw.items()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def _names(keyword: str, value: object, known: Sequence[str]) -> tuple[str, ...]:
    example = f"{keyword}=[{known[0]!r}]"
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        raise RequirementError(
            f"{keyword}={value!r} is not a list; expected e.g. {example} "
            f"with names from {', '.join(known)}"
        )
    if not value:
        raise RequirementError(f"{keyword}={value!r} is empty; expected e.g. {example}")
    names: list[str] = []
    for item in value:
        if not isinstance(item, str) or item not in known:
            raise RequirementError(
                f"{keyword}={value!r}: unknown name {item!r}; expected names from "
                f"{', '.join(known)}"
            )
        if item not in names:
            names.append(item)
    return tuple(names)


def _memory(keyword: str, value: object) -> int:
    from pytest_gpuinfer.probes.errors import InputError
    from pytest_gpuinfer.probes.memory_units import parse_memory

    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise RequirementError(f"{keyword}={value!r} is not a memory size such as '8GiB'")
    try:
        return parse_memory(value, what=keyword)
    except InputError as exc:
        raise RequirementError(str(exc)) from None


def _packages(value: object) -> dict[str, str]:
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    example = "expected a dict such as {'bitsandbytes': '>=0.45'}"
    if not isinstance(value, Mapping) or not value:
        raise RequirementError(f"packages={value!r} is not a non-empty dict; {example}")
    packages: dict[str, str] = {}
    for name, spec in value.items():
        if not isinstance(name, str) or not name.strip():
            raise RequirementError(f"packages={value!r}: package name {name!r} is not a name")
        if spec is None:
            spec = ""
        if not isinstance(spec, str):
            raise RequirementError(
                f"packages={value!r}: version {spec!r} for {name!r} is not a string; {example}"
            )
        try:
            SpecifierSet(spec)
        except InvalidSpecifier:
            raise RequirementError(
                f"packages={value!r}: {spec!r} for {name!r} is not a version specifier; {example}"
            ) from None
        packages[name.strip()] = spec.replace(" ", "")
    return packages


def _workload(value: object) -> dict[str, Any]:
    import os

    example = "expected a dict such as {'model': 'path/to/model', 'batch_size': 8, 'seq_len': 2048}"
    if not isinstance(value, Mapping) or not value:
        raise RequirementError(f"workload={value!r} is not a non-empty dict; {example}")
    unknown = [k for k in value if k not in WORKLOAD_KEYS]
    if unknown:
        raise RequirementError(
            f"workload={value!r}: unknown key {unknown[0]!r}; expected keys "
            f"{', '.join(WORKLOAD_KEYS)}"
        )
    model = value.get("model")
    if not isinstance(model, str | os.PathLike) or not os.fspath(model):
        raise RequirementError(f"workload={value!r} has no 'model' path; {example}")
    workload: dict[str, Any] = {"model": os.fspath(model)}
    for key, low in (("batch_size", 1), ("seq_len", 1), ("new_tokens", 0)):
        if key not in value:
            continue
        number = value[key]
        if isinstance(number, bool) or not isinstance(number, int) or number < low:
            raise RequirementError(
                f"workload={value!r}: {key}={number!r} is not a whole number >= {low}"
            )
        workload[key] = number
    return workload


def _gpus(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequirementError(f"gpus={value!r} is not a whole number >= 1")
    return value


def parse(marks: Iterable[tuple[tuple[Any, ...], Mapping[str, Any]]]) -> Requirements:
    """Merge marks given closest first (test, class, module) into one Requirements.

    Scalar keywords (gpus, compute_capability, free_memory, total_memory): the closest
    mark wins. Lists (modes, tensor_cores): union, closest first. packages: union of
    names; a package named at two levels must satisfy both specifiers.
    """
    from pytest_gpuinfer.probes.architectures import TENSOR_CORE_PRECISIONS

    precisions = tuple(TENSOR_CORE_PRECISIONS)
    raw: dict[str, Any] = {}
    modes: list[str] = []
    tensor_cores: list[str] = []
    packages: dict[str, str] = {}
    scalars: dict[str, Any] = {}
    marked = False
    for args, kwargs in marks:
        marked = True
        if args:
            raise RequirementError(
                f"gpuinfer mark takes keywords only, got positional {', '.join(map(repr, args))}; "
                f"expected keywords {', '.join(KEYWORDS)}"
            )
        for key, value in kwargs.items():
            if key not in KEYWORDS:
                raise RequirementError(
                    f"unknown gpuinfer keyword {key}={value!r}; "
                    f"expected one of {', '.join(KEYWORDS)}"
                )
            if key == "modes":
                modes.extend(m for m in _names(key, value, MODES) if m not in modes)
            elif key == "tensor_cores":
                tensor_cores.extend(
                    p for p in _names(key, value, precisions) if p not in tensor_cores
                )
            elif key == "packages":
                for name, spec in _packages(value).items():
                    earlier = packages.get(name)
                    packages[name] = (
                        spec if not earlier else ",".join(s for s in (earlier, spec) if s)
                    )
            elif key == "gpus":
                scalars.setdefault(key, _gpus(value))
            elif key == "workload":
                scalars.setdefault(key, _workload(value))
            elif key == "compute_capability":
                scalars.setdefault(key, parse_capability_spec(value))
            else:
                scalars.setdefault(key, _memory(key, value))
            if key in ("modes", "tensor_cores", "packages"):
                continue
            raw.setdefault(key, value)
    if modes:
        raw["modes"] = modes
    if tensor_cores:
        raw["tensor_cores"] = tensor_cores
    if packages:
        raw["packages"] = packages
    return Requirements(
        modes=tuple(modes),
        gpus=scalars.get("gpus"),
        compute_capability=scalars.get("compute_capability"),
        free_memory_bytes=scalars.get("free_memory"),
        total_memory_bytes=scalars.get("total_memory"),
        tensor_cores=tuple(tensor_cores),
        packages=packages,
        workload=scalars.get("workload"),
        raw=raw,
        marked=marked,
    )


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

    if requirements.workload is not None and gpus:
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
def _predicted(model: str, mode: str, batch: int, seq: int, new: int) -> Any:
    from pytest_gpuinfer.probes.memory_fit import estimate_workload_of

    return estimate_workload_of(model, mode, batch, seq, new)


def workload_reason(workload: Mapping[str, Any], mode: str, gpu: GPUInfo) -> str | None:
    """Why ``workload`` would not fit ``gpu`` in ``mode`` (None when it fits), with figures."""
    from pytest_gpuinfer.probes.errors import InputError
    from pytest_gpuinfer.probes.memory_units import format_bytes
    from pytest_gpuinfer.probes.memory_workload import (
        DEFAULT_BATCH_SIZE,
        DEFAULT_NEW_TOKENS,
        DEFAULT_SEQ_LEN,
    )

    batch = int(workload.get("batch_size", DEFAULT_BATCH_SIZE))
    seq = int(workload.get("seq_len", DEFAULT_SEQ_LEN))
    new = int(workload.get("new_tokens", DEFAULT_NEW_TOKENS))
    what = f"workload {batch} x {seq} + {new} new tokens of {workload['model']} in {mode}"
    try:
        predicted = _predicted(str(workload["model"]), mode, batch, seq, new)
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
        parts.append(f"workload of {requirements.workload['model']}")
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

"""What a ``@pytest.mark.gpuinfer(...)`` mark asks for: parsing and validating its keywords.

Parsing validates every keyword and value (``RequirementError`` names the bad one);
:mod:`pytest_gpuinfer.requirements.check` judges the result against a report. The plugin
parses each test's marks once; the fleet parses an exported marker with the same call.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_gpuinfer.probes.errors import InputError
from pytest_gpuinfer.probes.modes import MODES

if TYPE_CHECKING:
    from packaging.specifiers import SpecifierSet

    from pytest_gpuinfer.probes.memory_workload import Workload

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

_CLAUSE = re.compile(r"(>=|<=|==|!=|>|<)\d+(\.\d+)?")


class RequirementError(InputError):
    """A marker keyword or value that is not understood; the message names it."""


@dataclass(frozen=True)
class CapabilitySpec:
    """A compute capability constraint such as ``>=8.0,<9.0`` (packaging's specifiers)."""

    text: str

    def contains(self, capability: tuple[int, int]) -> bool:
        return _specifier(self.text).contains(f"{capability[0]}.{capability[1]}")


@functools.cache
def _specifier(text: str) -> SpecifierSet:
    # packaging.specifiers costs ~10 ms to import: judged at setup, never at collection.
    from packaging.specifiers import SpecifierSet

    return SpecifierSet(text)


def parse_capability_spec(text: object) -> CapabilitySpec:
    """Parse ``">=7.5"``, ``"==8.0"`` or ``">=8.0,<9.0"``; RequirementError otherwise."""
    expected = "expected comparisons like '>=7.5', '==8.0' or '>=8.0,<9.0'"
    if not isinstance(text, str):
        raise RequirementError(f"compute_capability={text!r} is not a string; {expected}")
    compact = text.replace(" ", "")
    # Plain comparisons of major.minor only: no "~=", wildcards or an empty clause.
    if not all(_CLAUSE.fullmatch(clause) for clause in compact.split(",")):
        raise RequirementError(f"compute_capability={text!r} is not understood; {expected}")
    return CapabilitySpec(text=compact)


@dataclass(frozen=True)
class DeclaredWorkload:
    """``workload={...}``: the model it runs and the audit's own ``Workload`` of sizes."""

    model: str
    sizes: Workload


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
    workload: DeclaredWorkload | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)
    """The keywords as written (merged), for reports."""
    marked: bool = False
    """True when at least one gpuinfer mark applies to the test."""

    @property
    def gpus_needed(self) -> int:
        """How many GPUs the per-GPU requirements are checked on (at least one)."""
        return self.gpus or 1

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


def _workload(value: object) -> DeclaredWorkload:
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
    from pytest_gpuinfer.probes.memory_workload import Workload, check_size

    sizes: dict[str, int] = {}
    for key in ("batch_size", "seq_len", "new_tokens"):
        if key not in value:
            continue
        number = value[key]
        written = repr(value) if len(repr(value)) <= 100 else "{...}"
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise RequirementError(
                f"workload={written}: {key}={number!r} is not a whole number >= 1"
            )
        try:
            sizes[key] = check_size(key, number, 1)
        except InputError as error:
            raise RequirementError(f"workload={written}: {error}") from None
    return DeclaredWorkload(os.fspath(model), Workload.requested(**sizes))


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

"""torch's caching-allocator configuration (``PYTORCH_CUDA_ALLOC_CONF`` / ``PYTORCH_ALLOC_CONF``).

Which variable torch reads, from the installed torch 2.13's headers:
``c10/cuda/CUDAAllocatorConfig.h`` (``CUDAAllocatorConfig::instance``) reads
``PYTORCH_CUDA_ALLOC_CONF`` first and falls back to ``PYTORCH_ALLOC_CONF`` ("keep the parsing
order ... stable"); ``c10/core/AllocatorConfig.h`` calls ``PYTORCH_ALLOC_CONF`` the primary,
device-generic name and keeps the CUDA one for backward compatibility. Both are read here in
the CUDA allocator's order, and a disagreement between the two is stated, not resolved
silently.

The setting the memory fit reads is ``expandable_segments``: the fit's fragmentation
allowance (:data:`probes.memory_moments.FRAGMENTATION_OF_KV` and
:data:`~probes.memory_moments.FRAGMENTATION_OF_INT8_BUFFERS`) was measured with the default
(fixed-size segments); :data:`EXPANDABLE_FRAGMENTATION_SCALE` scales it when segments are
expandable. Pure string parsing: no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

CUDA_VARIABLE = "PYTORCH_CUDA_ALLOC_CONF"
GENERIC_VARIABLE = "PYTORCH_ALLOC_CONF"
VARIABLES: tuple[str, ...] = (CUDA_VARIABLE, GENERIC_VARIABLE)
"""In the order torch 2.13's CUDA allocator reads them: the first one set wins."""

EXPANDABLE_FRAGMENTATION_SCALE = 0.5
"""The fraction of the default fragmentation allowance kept under ``expandable_segments:True``.

An assumption, not a measurement made here: with expandable segments the allocator maps
pages into one growing virtual range per stream, so blocks freed next to each other merge
(PyTorch devlog "When does fragmentation occur in the CUDA caching allocator?", 2026-06-01),
but a live allocation between two free ones still blocks the merge, and the K/V written
layer by layer between the intermediates is exactly that case. Half the measured
allowance errs high; a row of ``benchmarks/gpu_memory_validation.py`` run with the
variable set confirms or replaces it (the estimate says it is unconfirmed)."""

DEFAULT_SOURCE = (
    "fixed-size segments (torch's default): the allowance measured on the H100 "
    "(probes.memory_moments.FRAGMENTATION_OF_KV)"
)
EXPANDABLE_SOURCE = (
    f"expandable_segments:True: {EXPANDABLE_FRAGMENTATION_SCALE:g} x the default allowance, "
    "an assumption (probes.alloc_conf.EXPANDABLE_FRAGMENTATION_SCALE), unconfirmed on a GPU"
)


@dataclass(frozen=True)
class AllocatorConfig:
    """What the allocator variables say, as torch's parser would split them."""

    variable: str | None = None
    """The variable torch's CUDA allocator reads (the first of :data:`VARIABLES` set)."""
    raw: str | None = None
    settings: Mapping[str, str] = field(default_factory=dict)
    """``key -> value`` as written (``expandable_segments -> "True"``)."""
    values: Mapping[str, str] = field(default_factory=dict)
    """Every allocator variable that is set, by name (both may be)."""
    problems: tuple[str, ...] = ()
    """Entries torch would refuse or that do not do what they seem to (stated as notes)."""

    @property
    def expandable_segments(self) -> bool:
        return self.settings.get("expandable_segments") == "True"

    @property
    def backend(self) -> str:
        return self.settings.get("backend", "native")

    @property
    def fragmentation_scale(self) -> float:
        """Multiplies the fit's fragmentation allowance (1.0: the measured default)."""
        if self.backend != "native":
            return 1.0  # cudaMallocAsync: not modelled; keep the measured figure (err high)
        return EXPANDABLE_FRAGMENTATION_SCALE if self.expandable_segments else 1.0

    @property
    def fragmentation_source(self) -> str:
        if self.backend != "native":
            return (
                f"backend:{self.backend}: the caching allocator's allowance is kept; CUDA's own "
                "pool allocator is not modelled"
            )
        return EXPANDABLE_SOURCE if self.expandable_segments else DEFAULT_SOURCE

    def notes(self) -> list[str]:
        """One line each, for ``gpuinfer env`` and the audit's notes."""
        if self.variable is None:
            return [
                f"allocator: {' and '.join(VARIABLES)} unset (torch's defaults: fixed-size "
                "segments)"
            ]
        lines = [
            f"allocator: {self.variable}={self.raw} (fragmentation: {self.fragmentation_source})"
        ]
        lines.extend(f"allocator: {problem}" for problem in self.problems)
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "variable": self.variable,
            "raw": self.raw,
            "settings": dict(self.settings),
            "values": dict(self.values),
            "expandable_segments": self.expandable_segments,
            "backend": self.backend,
            "fragmentation_scale": self.fragmentation_scale,
            "fragmentation_source": self.fragmentation_source,
            "problems": list(self.problems),
        }


def parse_allocator_conf(text: str) -> tuple[dict[str, str], list[str]]:
    """``"expandable_segments:True,max_split_size_mb:128"`` -> settings and problems.

    Bracketed lists (``roundup_power2_divisions:[256:1,>:2]``) stay one value. Never raises:
    a malformed entry is a problem line, since torch (not this audit) is the one to refuse it.
    """
    settings: dict[str, str] = {}
    problems: list[str] = []
    for entry in _split_top_level(text):
        key, sep, value = (part.strip() for part in entry.partition(":"))
        if not entry.strip():
            continue
        if not sep or not key:
            problems.append(f"entry {entry.strip()!r} is not KEY:VALUE; torch refuses it")
            continue
        settings[key] = value
    expandable = settings.get("expandable_segments")
    if expandable is not None and expandable not in ("True", "False"):
        problems.append(
            f"expandable_segments:{expandable} is neither True nor False (torch accepts only "
            "those two words); judged as not expandable"
        )
    return settings, problems


def _split_top_level(text: str) -> list[str]:
    entries: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth = max(0, depth - 1)
        if char == "," and depth == 0:
            entries.append("".join(current))
            current = []
        else:
            current.append(char)
    entries.append("".join(current))
    return entries


def allocator_config(environ: Mapping[str, str]) -> AllocatorConfig:
    """The configuration a CUDA process started with ``environ`` would run with."""
    values = {name: environ[name] for name in VARIABLES if environ.get(name)}
    if not values:
        return AllocatorConfig()
    variable = next(name for name in VARIABLES if name in values)
    raw = values[variable]
    settings, problems = parse_allocator_conf(raw)
    if len(values) == 2 and values[CUDA_VARIABLE] != values[GENERIC_VARIABLE]:
        problems.append(
            f"{GENERIC_VARIABLE}={values[GENERIC_VARIABLE]} differs from {CUDA_VARIABLE}: "
            f"torch's CUDA allocator reads {CUDA_VARIABLE} (c10/cuda/CUDAAllocatorConfig.h); "
            "set one of them"
        )
    return AllocatorConfig(variable, raw, settings, values, tuple(problems))

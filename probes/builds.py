"""Which official binaries exist: torch wheels' GPU targets and bitsandbytes' CUDA libraries.

Data plus small pure lookups; the rules read them. A verdict is wrong when it assumes a
build nobody ships, so every row names where it was read from.

Binary compatibility (CUDA C++ Programming Guide, "Binary Compatibility"): SASS built for
``sm_XY`` runs on compute capability X.Z with Z >= Y (same major only); an ``sm_XYa``
target runs only on X.Y; PTX (``compute_XY``) is compiled by the driver at first use for
any capability >= X.Y.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from packaging.version import InvalidVersion, Version

Coverage = Literal["sass", "ptx"]


def _sm(*targets: str) -> tuple[str, ...]:
    """ "37", "90", "100" -> "sm_37" ...; "+120" -> PTX "compute_120"."""
    return tuple(f"compute_{t[1:]}" if t.startswith("+") else f"sm_{t}" for t in targets)


# --- torch wheels ---------------------------------------------------------------------------

_MOI90 = (
    "moi90/pytorch_compute_capabilities table.md (cuobjdump of the pytorch conda packages "
    "and docker images)"
)
_RELEASE_MD = (
    "pytorch RELEASE.md CUDA support matrix (PRs #164471, #175253, #182849, #197555); "
    ".ci/manywheel/build_cuda.sh"
)
_CU118_20 = _sm("37", "50", "60", "61", "70", "75", "80", "86", "90")
_CU118_26 = _sm("37", "50", "60", "70", "75", "80", "86", "90")
_CU12X_21 = _sm("50", "60", "61", "70", "75", "80", "86", "90")
_CU12X_25 = (*_CU12X_21, "sm_90a")
_CU126 = _sm("50", "60", "70", "75", "80", "86", "90")
_CU128_27 = _sm("75", "80", "86", "90", "100", "120", "+120")
_CU128_28 = _sm("70", "75", "80", "86", "90", "100", "120")
_CU128_211 = _sm("75", "80", "86", "90", "100", "120")
_CU13X = _sm("75", "80", "86", "90", "100", "120", "+120")
# Measured: torch.cuda.get_arch_list() of 2.11.0+cu130 on the 2 x H100 machine lists no
# PTX (docs/gpu-results.md, round 2).
_CU130_211 = _sm("75", "80", "86", "90", "100", "120")


@dataclass(frozen=True)
class TorchRelease:
    """One torch minor release: its official CUDA builds and the targets each compiles."""

    release: str
    builds: Mapping[str, tuple[str, ...]]
    """CUDA version ("12.6") -> targets ("sm_50", ..., "compute_120" for PTX)."""
    source: str


TORCH_RELEASES: tuple[TorchRelease, ...] = tuple(
    TorchRelease(release, MappingProxyType(builds), source)
    for release, builds, source in (
        ("2.0", {"11.7": _CU118_20[:-1], "11.8": _CU118_20}, _MOI90),
        ("2.1", {"11.8": _CU118_20, "12.1": _CU12X_21}, _MOI90),
        ("2.2", {"11.8": _CU118_20, "12.1": _CU12X_21}, _MOI90),
        ("2.3", {"11.8": _CU118_20, "12.1": _CU12X_21}, _MOI90),
        ("2.4", {"11.8": _CU118_20, "12.1": _CU12X_21, "12.4": _CU12X_21}, _MOI90),
        ("2.5", {"11.8": _CU118_20, "12.1": _CU12X_25, "12.4": _CU12X_25}, _MOI90),
        ("2.6", {"11.8": _CU118_26, "12.4": _CU126, "12.6": _CU126}, _MOI90),
        ("2.7", {"11.8": _CU118_26, "12.6": _CU126, "12.8": _CU128_27}, _MOI90),
        (
            "2.8",
            {"12.6": _CU126, "12.8": _CU128_28, "12.9": (*_CU128_28, "compute_120")},
            "dev-discuss 'Maxwell and Pascal support removed in CUDA 12.8 and 12.9 builds' "
            "(2.8); " + _RELEASE_MD,
        ),
        ("2.9", {"12.6": _CU126, "12.8": _CU128_28, "13.0": _CU13X}, _RELEASE_MD),
        (
            "2.10",
            {"12.6": _CU126, "12.8": _CU128_28, "13.0": _CU13X},
            _RELEASE_MD + "; get_arch_list() of 2.10.0+cu128 in pytorch#182250",
        ),
        (
            "2.11",
            {"12.6": _CU126, "12.8": _CU128_211, "13.0": _CU130_211},
            "pytorch#172352 (Volta dropped from cu128); get_arch_list() of 2.11.0+cu126 "
            "and +cu128 in pytorch#182250, of +cu130 measured on an H100 (docs/gpu-results.md); "
            + _RELEASE_MD,
        ),
        ("2.12", {"12.6": _CU126, "13.0": _CU13X, "13.2": _CU13X}, _RELEASE_MD),
        ("2.13", {"12.6": _CU126, "13.0": _CU13X, "13.2": _CU13X}, _RELEASE_MD),
        ("2.14", {"12.6": _CU126, "13.0": _CU13X, "13.2": _CU13X}, _RELEASE_MD),
    )
)
TORCH_RELEASE_BY_NAME: Mapping[str, TorchRelease] = MappingProxyType(
    {r.release: r for r in TORCH_RELEASES}
)


def parse_target(target: str) -> tuple[str, tuple[int, int], bool] | None:
    """ "sm_86" -> ("sm", (8, 6), False); "sm_90a" -> (..., True); "compute_120" -> PTX."""
    match = re.fullmatch(r"(sm|compute)_(\d+)(\d)([af]?)", target.strip())
    if not match:
        return None
    return match.group(1), (int(match.group(2)), int(match.group(3))), match.group(4) == "a"


def coverage(targets: Sequence[str], cc: tuple[int, int]) -> Coverage | None:
    """How a build with these targets runs on ``cc``: native SASS, PTX JIT, or not at all."""
    ptx = False
    for target in targets:
        parsed = parse_target(target)
        if parsed is None:
            continue
        kind, (major, minor), specific = parsed
        if kind == "sm":
            if (specific and cc == (major, minor)) or (
                not specific and cc[0] == major and cc[1] >= minor
            ):
                return "sass"
        elif cc >= (major, minor):
            ptx = True
    return "ptx" if ptx else None


def targets_text(targets: Sequence[str]) -> str:
    """ "sm_50, sm_60, ..." with PTX named as such."""
    return ", ".join(
        f"PTX {t.removeprefix('compute_')}" if t.startswith("compute_") else t for t in targets
    )


@dataclass(frozen=True)
class TorchBuild:
    """The torch build a verdict is judged against, and how we came to it."""

    version: str
    cuda: str | None
    targets: tuple[str, ...] | None
    """None when unknown (a custom build, a CUDA build no official release has)."""
    how: Literal["installed", "official", "assumed", "extrapolated", "pypi"]
    source: str

    @property
    def label(self) -> str:
        base = self.version.split("+", 1)[0]
        cuda = f"+cu{self.cuda.replace('.', '')}" if self.cuda else ""
        return f"torch {base}{cuda}"


@lru_cache(maxsize=64)
def torch_release(version: str) -> tuple[TorchRelease | None, bool]:
    """The table row for this torch version and whether it was extrapolated.

    Versions newer than the table are judged by the newest row (extrapolated); older ones,
    and versions that cannot be parsed, have no row.
    """
    try:
        parsed = Version(version)
    except InvalidVersion:
        return None, False
    key = f"{parsed.major}.{parsed.minor}"
    if key in TORCH_RELEASE_BY_NAME:
        return TORCH_RELEASE_BY_NAME[key], False
    newest = TORCH_RELEASES[-1]
    if parsed.release[:2] > Version(newest.release).release[:2]:
        return newest, True
    return None, False


def is_official_torch_version(version: str) -> bool:
    """True for release wheels: no local label, or ``+cuXYZ`` / ``+cpu`` (not "+git...")."""
    try:
        parsed = Version(version)
    except InvalidVersion:
        return False
    local = parsed.local
    return local is None or local == "cpu" or re.fullmatch(r"cu\d+", local) is not None


def cuda_from_local_label(version: str) -> str | None:
    """ "2.6.0+cu118" -> "11.8"; None without a ``+cuXYZ`` label."""
    match = re.search(r"\+cu(\d+)(\d)$", version.strip())
    return f"{int(match.group(1))}.{match.group(2)}" if match else None


def best_official_build(
    release: TorchRelease,
    cc: tuple[int, int],
    prefer: Callable[[str], bool] = lambda cuda: True,
) -> tuple[str, Coverage] | None:
    """The official build that drives ``cc`` best: native code first, then a CUDA version
    ``prefer`` likes (one bitsandbytes ships a library for), then the newest CUDA."""
    ranked: list[tuple[int, bool, tuple[int, ...], str, Coverage]] = []
    for cuda, targets in release.builds.items():
        how = coverage(targets, cc)
        if how is not None:
            native = 1 if how == "sass" else 0
            ranked.append((native, prefer(cuda), Version(cuda).release, cuda, how))
    if not ranked:
        return None
    *_, cuda, how = max(ranked)
    return cuda, how


def last_release_covering(cc: tuple[int, int]) -> tuple[str, str] | None:
    """(release, cuda) of the newest official build with native code for ``cc``."""
    for release in reversed(TORCH_RELEASES):
        for cuda, targets in sorted(release.builds.items(), key=lambda kv: Version(kv[0])):
            if coverage(targets, cc) == "sass":
                return release.release, cuda
    return None


# --- bitsandbytes ---------------------------------------------------------------------------

BNB_DATA = "probes/data/bnb_binaries.json"
_BNB_DATA_PATH = Path(__file__).resolve().parent / "data" / "bnb_binaries.json"
NoMatch = Literal["cpu-fallback", "nearest", "error"]


@dataclass(frozen=True)
class BnbLibrary:
    """One ``libbitsandbytes_cuda*.so`` of a wheel and the GPU code cuobjdump found in it."""

    file: str
    cuda: str
    cublaslt: bool
    targets: tuple[str, ...]
    """SASS ("sm_75") then PTX ("compute_90")."""


@dataclass(frozen=True)
class BnbRelease:
    """One bitsandbytes release as read from its wheel by scripts/generate_bnb_binaries.py."""

    release: str
    wheel: str
    libraries: tuple[BnbLibrary, ...]
    no_match: NoMatch
    """What the loader does when no library matches torch's CUDA version."""
    no_match_source: str
    cublaslt_ccs: tuple[str, ...] | None
    """Compute capabilities whose loader picks the cuBLASLt library (0.31-0.35)."""
    cublaslt_from: tuple[int, int] | None
    """From this compute capability the loader picks cuBLASLt (0.36-0.44); below it
    *_nocublaslt. Both None: the loader never asks for *_nocublaslt."""
    cublaslt_source: str | None
    cpu_library: bool

    @property
    def cuda_libs(self) -> tuple[str, ...]:
        """CUDA versions with any library, oldest first."""
        return tuple(sorted({lib.cuda for lib in self.libraries}, key=lambda c: Version(c)))

    @property
    def source(self) -> str:
        return f"wheel {self.wheel} read by cuobjdump ({BNB_DATA})"

    def wants_cublaslt(self, cc: tuple[int, int]) -> bool:
        """Whether the loader asks for the cuBLASLt library (not *_nocublaslt) on ``cc``."""
        if self.cublaslt_ccs is not None:
            return f"{cc[0]}.{cc[1]}" in self.cublaslt_ccs
        return self.cublaslt_from is None or cc >= self.cublaslt_from


def _where(source: Mapping[str, object], release: str) -> str:
    return f"bitsandbytes {release} {source['file']}:{source['line']}"


def _bnb_row(raw: Mapping[str, Any]) -> BnbRelease:
    release = str(raw["release"])
    selection = raw.get("cublaslt_selection")
    libraries = tuple(
        BnbLibrary(
            str(lib["file"]),
            str(lib["cuda"]),
            bool(lib["cublaslt"]),
            (*lib["sass"], *lib["ptx"]),
        )
        for lib in raw["libraries"]
    )
    ccs = selection.get("cublaslt_ccs") if selection else None
    since = selection.get("cublaslt_from") if selection else None
    return BnbRelease(
        release=release,
        wheel=str(raw["wheel"]),
        libraries=libraries,
        no_match=raw["no_match"]["behaviour"],
        no_match_source=_where(raw["no_match"]["source"], release),
        cublaslt_ccs=tuple(ccs) if ccs is not None else None,
        cublaslt_from=(int(since.split(".")[0]), int(since.split(".")[1])) if since else None,
        cublaslt_source=_where(selection["source"], release) if selection else None,
        cpu_library=bool(raw["cpu_library"]),
    )


@lru_cache(maxsize=1)
def bnb_releases() -> tuple[BnbRelease, ...]:
    """Every release the generator read, oldest first (loaded on first use)."""
    doc = json.loads(_BNB_DATA_PATH.read_text(encoding="utf-8"))
    rows = (_bnb_row(raw) for raw in doc["releases"])
    return tuple(sorted(rows, key=lambda row: Version(row.release)))


@lru_cache(maxsize=1)
def _bnb_by_version() -> Mapping[Version, BnbRelease]:
    return MappingProxyType({Version(row.release): row for row in bnb_releases()})


def bnb_covered_text() -> str:
    """ "0.31.8-0.50.2": the releases the binary table holds."""
    rows = bnb_releases()
    return f"{rows[0].release}-{rows[-1].release}"


def bnb_release(version: Version) -> BnbRelease | None:
    """The row read from this exact release's wheel; None for a release nobody read."""
    return _bnb_by_version().get(version)


def bnb_library_for(row: BnbRelease, cuda: str, cc: tuple[int, int]) -> BnbLibrary | None:
    """The library this release loads under torch's CUDA ``cuda`` on ``cc``; None: none.

    Mirrors the loader the generator read: the exact ``cudaXYZ`` name (``_nocublaslt``
    where the loader rules cuBLASLt out for ``cc``); from 0.50 the nearest older library
    of the same major, else the nearest newer one.
    """
    lt = row.wants_cublaslt(cc)
    candidates = [lib for lib in row.libraries if lib.cublaslt == lt]
    for lib in candidates:
        if lib.cuda == cuda:
            return lib
    if row.no_match != "nearest":
        return None
    wanted = Version(cuda).release
    same = [lib for lib in candidates if Version(lib.cuda).release[0] == wanted[0]]
    older = [lib for lib in same if Version(lib.cuda).release < wanted]
    if older:
        return max(older, key=lambda lib: Version(lib.cuda).release)
    newer = [lib for lib in same if Version(lib.cuda).release > wanted]
    return min(newer, key=lambda lib: Version(lib.cuda).release) if newer else None


def bnb_releases_covering(cc: tuple[int, int]) -> tuple[str, str] | None:
    """(first, last) release with a library holding code for ``cc``; None: no release."""
    covering = [
        row.release
        for row in bnb_releases()
        if any(coverage(lib.targets, cc) is not None for lib in row.libraries)
    ]
    return (covering[0], covering[-1]) if covering else None

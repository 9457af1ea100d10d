"""Which official binaries exist: torch wheels' GPU targets and bitsandbytes' CUDA libraries.

Data plus small pure lookups; the rules read them. A verdict is wrong when it assumes a
build nobody ships, so every row names where it was read from.

Binary compatibility (CUDA C++ Programming Guide, "Binary Compatibility"): SASS built for
``sm_XY`` runs on compute capability X.Z with Z >= Y (same major only); an ``sm_XYa``
target runs only on X.Y; PTX (``compute_XY``) is compiled by the driver at first use for
any capability >= X.Y.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Literal

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
    how: Literal["installed", "official", "assumed", "extrapolated"]
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

_BNB_SCRIPTS = "bitsandbytes .github/scripts/build-cuda.sh and workflows/python-package.yml at tag"


@dataclass(frozen=True)
class BnbRelease:
    """bitsandbytes releases from ``since`` (inclusive) until the next row."""

    since: str
    cuda_libs: tuple[str, ...] | None
    """CUDA versions with a native library in the wheel; None: not tabulated."""
    targets: Mapping[str, tuple[str, ...]]
    """CUDA-version prefix ("12.8", "13", "" for the rest) -> compiled targets."""
    source: str
    nearest_lib: bool = False
    """True when a missing exact CUDA library falls back to the nearest older one of the
    same major (0.50); before, bitsandbytes silently loaded its CPU library instead."""


_LEGACY_KEPLER = _sm("35", "37", "50", "52", "60", "61", "70", "72", "75", "80", "86", "89", "90")
_MAXWELL_TO_HOPPER = _sm("50", "52", "60", "61", "70", "75", "80", "86", "89", "90")
_CU128_BNB_0453 = _sm("70", "75", "80", "86", "89", "90", "100", "120")
_CU128_BNB_046 = _sm("75", "80", "86", "89", "90", "100", "120")
_CU12_BNB_047 = _sm("50", "60", "70", "75", "80", "86", "89", "90")
_CU12_BNB_048 = _sm("60", "70", "75", "80", "86", "89", "90")
_CU13_BNB_048 = _sm("75", "80", "86", "89", "90", "100", "120")
_CU_118_126 = ("11.8", "12.0", "12.1", "12.2", "12.3", "12.4", "12.5", "12.6")

BNB_RELEASES: tuple[BnbRelease, ...] = (
    BnbRelease(
        "0.36.0",
        ("10.2", "11.0", "11.1", "11.2", "11.3", "11.4", "11.5", "11.6", "11.7", "11.8", "12.0"),
        {"": _LEGACY_KEPLER},
        "bitsandbytes 0.36.0 Makefile; wheel contents of 0.36.0 and 0.36.0.post2",
    ),
    BnbRelease("0.37.0", None, {"": _LEGACY_KEPLER}, "bitsandbytes Makefile at 0.37.0-0.38.1"),
    BnbRelease(
        "0.39.0",
        None,
        {"": _LEGACY_KEPLER},
        "bitsandbytes 0.39.0 CHANGELOG ('Kepler binaries ... are no longer provided via "
        "pip') against REFERENCE §8 (sm_37 code in the 0.39.x wheels' fatbins)",
    ),
    BnbRelease("0.40.0", None, {"": _MAXWELL_TO_HOPPER}, "bitsandbytes Makefile at 0.40-0.43"),
    BnbRelease(
        "0.44.0",
        ("11.7", *_CU_118_126[:-1]),
        {"11.7": _MAXWELL_TO_HOPPER[:-2], "11.8": _MAXWELL_TO_HOPPER[:-1], "": _MAXWELL_TO_HOPPER},
        f"{_BNB_SCRIPTS} 0.44.0",
    ),
    BnbRelease(
        "0.45.0",
        ("11.7", *_CU_118_126),
        {"11.7": _MAXWELL_TO_HOPPER[:-2], "11.8": _MAXWELL_TO_HOPPER[:-1], "": _MAXWELL_TO_HOPPER},
        f"{_BNB_SCRIPTS} 0.45.0",
    ),
    BnbRelease(
        "0.45.3",
        ("11.7", *_CU_118_126, "12.8"),
        {"11.7": _MAXWELL_TO_HOPPER[:-2], "12.8": _CU128_BNB_0453, "": _MAXWELL_TO_HOPPER},
        f"{_BNB_SCRIPTS} 0.45.3 (first cuda128 libraries: sm_100, sm_120)",
    ),
    BnbRelease(
        "0.46.0",
        (*_CU_118_126, "12.8"),
        {"12.8": _CU128_BNB_046, "": _MAXWELL_TO_HOPPER},
        f"{_BNB_SCRIPTS} 0.46.0",
    ),
    BnbRelease(
        "0.46.1",
        (*_CU_118_126, "12.8", "12.9"),
        {"12.8": _CU128_BNB_046, "12.9": _CU128_BNB_046, "": _MAXWELL_TO_HOPPER},
        f"{_BNB_SCRIPTS} 0.46.1",
    ),
    BnbRelease(
        "0.47.0",
        (*_CU_118_126, "12.8", "12.9"),
        {"12.8": _CU128_BNB_0453, "12.9": _CU128_BNB_0453, "": _CU12_BNB_047},
        f"{_BNB_SCRIPTS} 0.47.0 (bitsandbytes PR #1715: Volta back in cu128/cu129)",
    ),
    BnbRelease(
        "0.48.0",
        (*_CU_118_126, "12.8", "12.9", "13.0"),
        {"12.8": _CU128_BNB_0453, "12.9": _CU128_BNB_0453, "13": _CU13_BNB_048, "": _CU12_BNB_048},
        f"{_BNB_SCRIPTS} 0.48.0 (Maxwell dropped; first cuda130 library)",
    ),
    BnbRelease(
        "0.50.0",
        ("11.8", "12.1", "12.4", "12.6", "12.8", "13.0", "13.2"),
        {"12.8": _CU128_BNB_0453, "12.9": _CU128_BNB_0453, "13": _CU13_BNB_048, "": _CU12_BNB_048},
        f"{_BNB_SCRIPTS} 0.50.0",
        nearest_lib=True,
    ),
)


def bnb_release(version: Version) -> BnbRelease | None:
    """The row in force for this bitsandbytes version (None before 0.36)."""
    found: BnbRelease | None = None
    for row in BNB_RELEASES:
        if version.release >= Version(row.since).release:
            found = row
    return found


def bnb_library_for(row: BnbRelease, cuda: str) -> str | None:
    """Which CUDA library this release loads under torch's CUDA ``cuda``; None: the CPU one."""
    if row.cuda_libs is None or cuda in row.cuda_libs:
        return cuda
    if row.nearest_lib:
        wanted = Version(cuda).release
        older = [c for c in row.cuda_libs if Version(c).release[0] == wanted[0]]
        older = [c for c in older if Version(c).release <= wanted]
        if older:
            return max(older, key=lambda c: Version(c).release)
    return None


def bnb_targets_for(row: BnbRelease, cuda: str) -> tuple[str, ...]:
    """The targets compiled into the library for ``cuda`` (longest prefix wins)."""
    for prefix in sorted(row.targets, key=len, reverse=True):
        if prefix == "" or cuda == prefix or cuda.startswith(prefix + "."):
            return row.targets[prefix]
    return ()

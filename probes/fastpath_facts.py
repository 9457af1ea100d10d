"""The fastpath facts read from release artefacts (probes/data/fastpath.json), per version.

``scripts/generate_fastpath_facts.py`` writes the file from transformers wheels (one per
minor) and flash-attn sdists (every 2.x release); every fact keeps its release, file and
line, which the verdicts cite. A version between two releases read is judged by the
nearest release read at or below it within its minor (transformers) or overall
(flash-attn); a version newer than every release read is judged by the newest one and
says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

DATA_FILE = Path(__file__).with_name("data") / "fastpath.json"


@dataclass(frozen=True)
class Cited:
    value: Any
    where: str
    """``transformers 4.40.2 utils/import_utils.py:763``: where the value was read."""


@dataclass(frozen=True)
class TransformersRelease:
    release: str
    beyond: bool
    """True when the installed version is newer than every release read."""
    facts: dict[str, Any]

    def cited(self, key: str) -> Cited:
        entry = self.facts.get(key) or {"value": None, "file": "?", "line": None}
        line = f":{entry['line']}" if entry.get("line") else ""
        return Cited(entry["value"], f"transformers {self.release} {entry['file']}{line}")


@dataclass(frozen=True)
class FlashAttnRelease:
    release: str
    facts: dict[str, Any]

    def where(self, entry: dict[str, Any]) -> str:
        line = f":{entry['line']}" if entry.get("line") else ""
        return f"flash-attn {self.release} {entry['file']}{line}"


@cache
def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DATA_FILE.read_text(encoding="utf-8"))
    return data


def covered() -> dict[str, list[str]]:
    """Package -> the releases read (the contract with the closed-world check)."""
    return {k: list(v) for k, v in load()["covered"].items()}


def _parse(raw: str) -> Version | None:
    try:
        return Version(raw)
    except InvalidVersion:
        return None


def transformers_release(raw: str) -> TransformersRelease | None:
    """The release read for this version's minor; None below the first release read."""
    version = _parse(raw)
    if version is None:
        return None
    table: dict[str, Any] = load()["transformers"]
    releases = sorted(table, key=Version)
    at_or_below = [r for r in releases if Version(r).release[:2] <= version.release[:2]]
    if not at_or_below:
        return None
    chosen = at_or_below[-1]
    beyond = Version(chosen).release[:2] < version.release[:2]
    return TransformersRelease(chosen, beyond, table[chosen])


def flash_attn_release(raw: str) -> FlashAttnRelease | None:
    """The release itself where it was read; else the newest read in its minor (its build
    lines are the minor's), else the newest read below it; None below the first one read."""
    version = _parse(raw)
    if version is None:
        return None
    table: dict[str, Any] = load()["flash-attn"]
    releases = sorted(table, key=Version)
    exact = [r for r in releases if Version(r) == version]
    if exact:
        return FlashAttnRelease(exact[0], table[exact[0]])
    minor = [r for r in releases if Version(r).release[:2] == version.release[:2]]
    below = [r for r in releases if Version(r) <= version]
    found = minor or below
    return FlashAttnRelease(found[-1], table[found[-1]]) if found else None


def first_release(key: str, *, name: str | None = None) -> str | None:
    """The first transformers release read where fact ``key`` is true (or lists ``name``)."""
    table: dict[str, Any] = load()["transformers"]
    for release in sorted(table, key=Version):
        value = table[release][key]["value"] if table[release].get(key) else None
        if (name in value) if name is not None and value else (name is None and value):
            return release
    return None


def last_release(key: str) -> str | None:
    """The last transformers release read where fact ``key`` is true."""
    table: dict[str, Any] = load()["transformers"]
    hits = [r for r in sorted(table, key=Version) if table[r].get(key, {}).get("value")]
    return hits[-1] if hits else None


def flash_floor(tf: TransformersRelease) -> tuple[str, str, str] | None:
    """(operator, version, where) of the flash-attn floor this transformers checks."""
    entry = tf.facts.get("flash_attn_floor")
    if not entry:
        return None
    line = f":{entry['line']}" if entry.get("line") else ""
    where = f"transformers {tf.release} {entry['file']}{line}"
    return entry["value"]["op"], entry["value"]["version"], where


def meets_floor(flash_attn: str, floor: tuple[str, str, str]) -> bool:
    op, bound, _ = floor
    installed = _parse(flash_attn)
    if installed is None:
        return False
    # The comparison transformers itself makes (packaging's order, post/local tags included).
    return installed > Version(bound) if op == ">" else installed >= Version(bound)


def runtime_accepts(fa: FlashAttnRelease, cc: tuple[int, int]) -> tuple[bool, str]:
    """Whether ``mha_fwd``'s compute-capability check lets this GPU through, and where."""
    entry = fa.facts["gpu_check"]
    for major, op, minor in entry["value"]:
        if op == "any" and cc[0] >= major:
            return True, fa.where(entry)
        if op == "==" and cc == (major, minor):
            return True, fa.where(entry)
        if op == ">=" and cc[0] == major and cc[1] >= minor:
            return True, fa.where(entry)
    return False, fa.where(entry)


@dataclass(frozen=True)
class WheelKernels:
    state: str
    """"yes": a kernel for this GPU; "no": none; "unconfirmed": setup.py would build one."""
    detail: str


def wheel_kernels(
    fa: FlashAttnRelease, cc: tuple[int, int], torch_cuda: tuple[int, int] | None
) -> WheelKernels:
    """Whether the release's CUDA wheel for this torch build carries SASS for this GPU.

    ``-gencode arch=compute_XY,code=sm_XY`` embeds SASS only (no PTX), and SASS for
    sm_XY runs on X.Z with Z >= Y only, so a GPU needs its own major's kernel.
    """
    nvcc = _wheel_nvcc(fa, torch_cuda)
    built: list[tuple[int, int, str]] = []
    skipped: list[str] = []
    for entry in fa.facts["archs"]:
        sm = entry["value"]["sm"]
        arch = (int(sm[:-1]), int(sm[-1]))
        floor = entry["value"]["nvcc_min"]
        if floor is None or (nvcc is not None and Version(nvcc[0]) >= Version(floor)):
            built.append((*arch, f"sm_{sm}"))
        else:
            skipped.append(f"sm_{sm} needs nvcc >= {floor} ({fa.where(entry)})")
    names = ", ".join(name for _, _, name in built)
    how = f"built with CUDA {nvcc[0]} ({nvcc[1]})" if nvcc else "built with torch's own CUDA"
    match = [name for major, minor, name in built if major == cc[0] and minor <= cc[1]]
    if not match:
        why = f"; {'; '.join(skipped)}" if skipped else ""
        return WheelKernels(
            "no", f"flash-attn {fa.release} wheels ({how}) carry {names} kernels only{why}"
        )
    if cc[0] >= 10:
        # Reports of released wheels on Blackwell all say "no kernel image" (the sources
        # are listed in the data file); a setup.py line alone does not settle it.
        evidence = load()["sm120_released_wheels"]["sources"][0].split(" ")[0]
        return WheelKernels(
            "unconfirmed",
            f"flash-attn {fa.release} setup.py would compile {match[0]} under CUDA "
            f"{nvcc[0] if nvcc else '?'}, but no released wheel is confirmed to carry it "
            f"({evidence} and others in probes/data/fastpath.json)",
        )
    return WheelKernels("yes", f"flash-attn {fa.release} wheels ({how}) carry {match[0]}")


def _wheel_nvcc(fa: FlashAttnRelease, torch_cuda: tuple[int, int] | None) -> tuple[str, str] | None:
    """The CUDA toolkit the release's wheel for this torch build is compiled with."""
    entries = fa.facts["wheel_cuda"]
    if torch_cuda is None:
        # Unknown build: the newest toolkit the release names.
        return (entries[-1]["value"], fa.where(entries[-1])) if entries else None
    same = [e for e in entries if int(e["value"].split(".")[0]) == torch_cuda[0]]
    if same:
        return same[-1]["value"], fa.where(same[-1])
    if entries:
        # setup.py's last branch (``else: parse(...)``) catches every other major.
        return entries[-1]["value"], fa.where(entries[-1])
    return f"{torch_cuda[0]}.{torch_cuda[1]}", f"flash-attn {fa.release} setup.py get_wheel_url"

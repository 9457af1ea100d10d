"""Generate probes/data/torch_platforms.json: which official wheels exist per platform.

Run by a maintainer when releases appear, never at audit time:

    /work/venv/bin/python scripts/generate_torch_platforms.py [--cache /work/wheelcache]

What it reads, from PyPI's simple index (PEP 691 JSON):
- torch, every final release >= 2.0: for Linux x86_64 and aarch64, the core metadata of one
  CPython wheel (cp311 where there is one; the PEP 658 ``<wheel>.metadata`` file, else the
  METADATA member by HTTP Range, as scripts/floors_fetch.py does). A wheel whose
  ``Requires-Dist`` names NVIDIA's CUDA runtime for that platform (``nvidia-cuda-runtime-cu12
  ==12.4.127``; from torch 2.11 ``cuda-toolkit[cudart,...]==13.0.2``) is a CUDA build of
  that CUDA version; one that names none is CPU-only. This is the build
  ``pip install torch==V`` installs.
- bitsandbytes, every release >= 0.31: the platform tags of its wheels (file names only).

What it cannot read: the PyTorch index (download.pytorch.org) is not reachable from the
machine that generates this file, so its aarch64 builds are copied from the public
statements in STATED, each with its source and ``"read": false``. NVIDIA's JetPack builds
of torch for Jetson are not on any index read here: their table is empty, so every
JetPack torch is "unconfirmed".
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import parse_wheel_filename
from packaging.version import InvalidVersion, Version

sys.path.insert(0, str(Path(__file__).resolve().parent))
import floors_fetch

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "probes" / "data" / "torch_platforms.json"
TORCH_FROM = "2.0"
BNB_FROM = "0.31"
PLATFORMS = {"x86_64": r"(manylinux.*|linux)_x86_64", "aarch64": r"(manylinux.*|linux)_aarch64"}
RUNTIME = re.compile(r"^nvidia-cuda-runtime(-cu\d+)?$")
"""The CUDA runtime as torch <= 2.10 pins it; from 2.11 it is ``cuda-toolkit[cudart,...]``."""

STATED: list[dict[str, Any]] = [
    {
        "platform": "aarch64",
        "release": "2.4",
        "cuda": [],
        "read": False,
        "source": "https://github.com/pytorch/pytorch/issues/134790 (2024-08-29: no "
        "CUDA-enabled linux-aarch64 wheel of torch 2.4.0; CUDA aarch64 builds in the nightly "
        "index only)",
    },
    {
        "platform": "aarch64",
        "release": "2.7",
        "cuda": ["12.8"],
        "read": False,
        "source": "https://github.com/vllm-project/vllm/issues/16502 (torch==2.7.0 aarch64 "
        "CUDA 12.8 wheels on download.pytorch.org/whl/test/cu128)",
    },
    {
        "platform": "aarch64",
        "release": "2.8",
        "cuda": ["12.8"],
        "read": False,
        "source": "https://github.com/pytorch/pytorch/issues/160162 (torch 2.8: PyPI's aarch64 "
        "wheel is CPU-only; download.pytorch.org/whl/cu128 holds aarch64 CUDA wheels, SBSA "
        "builds for GH200/GB200)",
    },
]
"""Builds on the PyPI-unreachable PyTorch index, from public statements (not read here)."""

JETPACK: dict[str, Any] = {
    "covered": [],
    "source": "NVIDIA ships torch for Jetson (Tegra) with JetPack (local versions such as "
    "2.x.0a0+<commit>.nvYY.MM) outside PyPI; none was read, so none is tabulated",
}


def _index(package: str) -> dict[str, Any]:
    raw = floors_fetch._get(
        f"{floors_fetch.INDEX}/{package}/", "application/vnd.pypi.simple.v1+json"
    )
    data: dict[str, Any] = json.loads(raw)
    return data


def _final(version: Version) -> bool:
    return not (version.is_prerelease or version.is_devrelease or version.local)


def _torch_wheels(index: dict[str, Any]) -> dict[Version, dict[str, floors_fetch.ReleaseFile]]:
    """Release -> platform -> the wheel read for it (cp311 first, no build tag first)."""
    ranked: dict[tuple[Version, str], list[tuple[tuple[int, int, str], dict[str, Any]]]] = {}
    for entry in index["files"]:
        name = str(entry["filename"])
        if not name.endswith(".whl"):
            continue
        try:
            _, version, build, tags = parse_wheel_filename(name)
        except (ValueError, InvalidVersion):
            continue
        if not _final(version) or version < Version(TORCH_FROM):
            continue
        for platform, pattern in PLATFORMS.items():
            if any(
                re.fullmatch(pattern, t.platform) and t.interpreter.startswith("cp") for t in tags
            ):
                cp311 = any(t.interpreter == "cp311" for t in tags)
                rank = (0 if cp311 else 1, 1 if build else 0, name)
                ranked.setdefault((version, platform), []).append((rank, entry))
    chosen: dict[Version, dict[str, floors_fetch.ReleaseFile]] = {}
    for (version, platform), entries in ranked.items():
        entry = min(entries, key=lambda pair: pair[0])[1]
        chosen.setdefault(version, {})[platform] = floors_fetch.ReleaseFile(
            "torch",
            version,
            str(entry["filename"]),
            str(entry["url"]),
            str(entry["hashes"]["sha256"]),
            int(str(entry["size"])),
            bool(entry.get("yanked")),
        )
    return dict(sorted(chosen.items()))


def _marker_env(platform: str) -> dict[str, str]:
    return {
        **{key: str(value) for key, value in default_environment().items()},
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": platform,
        "python_version": "3.11",
        "python_full_version": "3.11.7",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "os_name": "posix",
        "extra": "",
    }


def cuda_of(metadata: str, platform: str) -> tuple[str | None, int | None, str | None]:
    """(CUDA major.minor, METADATA line, the requirement) of a wheel; (None, ...) for CPU."""
    env = _marker_env(platform)
    for number, line in enumerate(metadata.splitlines(), 1):
        if not line.startswith("Requires-Dist:"):
            continue
        text = line.split(":", 1)[1].strip()
        requirement = Requirement(text)
        name = requirement.name.lower().replace("_", "-")
        if not RUNTIME.match(name) and not (
            name == "cuda-toolkit" and "cudart" in requirement.extras
        ):
            continue
        if requirement.marker is not None and not requirement.marker.evaluate(env):
            continue
        pinned = [s.version for s in requirement.specifier if s.operator == "=="]
        if pinned:
            release = Version(pinned[0]).release
            return f"{release[0]}.{release[1]}", number, text
    return None, None, None


def read_torch(cache: Path, workers: int) -> tuple[list[str], dict[str, Any], list[str]]:
    wheels = _torch_wheels(_index("torch"))
    jobs = [(v, p, f) for v, by in wheels.items() for p, f in by.items()]

    def read(
        job: tuple[Version, str, floors_fetch.ReleaseFile],
    ) -> tuple[str, str, dict[str, Any], str]:
        version, platform, release = job
        path, how = floors_fetch.fetch_metadata(release, cache)
        cuda, line, requirement = cuda_of(path.read_text(encoding="utf-8"), platform)
        row: dict[str, Any] = {
            "cuda": cuda,
            "wheel": release.filename,
            "file": "*.dist-info/METADATA",
            "line": line,
            "requirement": requirement,
        }
        how = re.sub(r"^\S+\.dist-info/METADATA read", "METADATA read", how.split(" (")[0])
        return str(version), platform, row, how

    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(read, jobs))
    table: dict[str, dict[str, Any]] = {}
    how_read: set[str] = set()
    for version, platform, row, how in results:
        table.setdefault(version, {})[platform] = row
        how_read.add(how)
    covered = [str(v) for v in wheels if set(wheels[v]) == set(PLATFORMS)]
    return covered, table, sorted(how_read)


def read_bnb() -> tuple[list[str], dict[str, list[str]]]:
    """Release -> the Linux platforms its wheels are for ("any": a pure wheel)."""
    platforms: dict[Version, set[str]] = {}
    for entry in _index("bitsandbytes")["files"]:
        name = str(entry["filename"])
        if not name.endswith(".whl"):
            continue
        try:
            _, version, _, tags = parse_wheel_filename(name)
        except (ValueError, InvalidVersion):
            continue
        if not _final(version) or version < Version(BNB_FROM):
            continue
        found = platforms.setdefault(version, set())
        for tag in tags:
            if tag.platform == "any":
                found.add("any")
            for platform, pattern in PLATFORMS.items():
                if re.fullmatch(pattern, tag.platform):
                    found.add(platform)
    ordered = sorted(platforms)
    return [str(v) for v in ordered], {str(v): sorted(platforms[v]) for v in ordered}


def generate(cache: Path, workers: int = 4) -> dict[str, Any]:
    torch_covered, torch_rows, how = read_torch(cache, workers)
    bnb_covered, bnb_rows = read_bnb()
    return {
        "schema": "pytest-gpuinfer/torch-platforms",
        "schema_version": "1",
        "generated_by": "scripts/generate_torch_platforms.py",
        "generated_at": datetime.date.today().isoformat(),
        "read": {
            "index": "PyPI simple index (PEP 691 JSON)",
            "torch": "core metadata of one CPython wheel per release and Linux platform "
            f"(x86_64, aarch64), torch >= {TORCH_FROM}; read as: {', '.join(how)}",
            "cuda_build": "a Requires-Dist pinning nvidia-cuda-runtime for the platform names "
            "the wheel's CUDA version; none: a CPU-only wheel",
            "bitsandbytes": f"wheel file names of every release >= {BNB_FROM} ('any': a pure "
            "wheel, whose libraries are x86_64 builds: bitsandbytes#1043)",
            "not_read": "download.pytorch.org (unreachable here): its builds are the 'stated' "
            "rows, each with its source",
        },
        "covered": {"torch": torch_covered, "bitsandbytes": bnb_covered},
        "torch": torch_rows,
        "stated": STATED,
        "bitsandbytes": bnb_rows,
        "jetpack": JETPACK,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("/work/wheelcache"))
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    started = time.monotonic()
    data = generate(args.cache)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(data, indent=1) + "\n")
    print(
        f"{args.output}: torch {len(data['covered']['torch'])} releases, bitsandbytes "
        f"{len(data['covered']['bitsandbytes'])}, in {time.monotonic() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

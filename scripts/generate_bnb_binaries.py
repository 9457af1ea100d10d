#!/usr/bin/env python3
"""Maintainer-run: read every bitsandbytes wheel 0.31-0.50 and write probes/data/bnb_binaries.json.

Never run at audit time: it needs the network (pip) and minutes. For each release on PyPI it
takes the linux x86_64 wheel (or the pure one early releases ship), lists the
``libbitsandbytes_*`` libraries inside, reads the GPU code of each CUDA library with
``cuobjdump --list-elf/--list-ptx`` (registry package nvidia-cuda-cuobjdump) and reads from
the loader source what happens when no library matches torch's CUDA version.

    python scripts/generate_bnb_binaries.py [--cache DIR] [--cuobjdump PATH] [--jobs N]

cuobjdump 13.x refuses fatbins holding code it no longer supports ("Support for 'sm_35' has
been removed"); those libraries are read from the fatbin entry headers instead, and the
header reader is checked against cuobjdump on every library cuobjdump does read.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import struct
import subprocess
import sys
import tempfile
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "probes" / "data" / "bnb_binaries.json"
REGISTRY = ROOT / "tests" / "data" / "bnb_registry_releases.json"
LOW, HIGH = Version("0.31"), Version("0.51")
LIB = re.compile(r"^bitsandbytes/libbitsandbytes_(cpu|cuda(\d+)(_nocublaslt)?)\.so$")
FATBIN_MAGIC = 0xBA55ED50
Json = dict[str, Any]


def registry_versions() -> list[str]:
    out = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", "bitsandbytes"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("Available versions:"))
    found = [v.strip() for v in line.split(":", 1)[1].split(",")]
    return sorted((v for v in found if LOW <= Version(v) < HIGH), key=Version)


def wheel_for(version: str, cache: Path) -> Path:
    def pick() -> Path | None:
        files = sorted(cache.glob(f"bitsandbytes-{version}-*.whl"))
        # The linux x86_64 wheel carries the CUDA libraries; early releases ship one pure wheel.
        linux = [f for f in files if "linux" in f.name and "x86_64" in f.name]
        pure = [f for f in files if f.name.endswith("-none-any.whl")]
        return (linux or pure)[0] if linux or pure else None

    found = pick()
    if found is None:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--platform", "manylinux_2_24_x86_64", f"bitsandbytes=={version}", "-d", str(cache)],
            check=True,
        )  # fmt: skip
        found = pick()
    if found is None:
        raise SystemExit(f"no linux x86_64 or pure wheel for bitsandbytes {version}")
    return found


def cuda_of(digits: str) -> str:
    """ "117" -> "11.7", "130" -> "13.0": the last digit is the minor version."""
    return f"{int(digits[:-1])}.{digits[-1]}"


def elf_section(data: bytes, wanted: str) -> bytes:
    """The bytes of one section of a 64-bit little-endian ELF file (empty when absent)."""
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def header(i: int) -> tuple[int, int, int]:
        name, _, _, _, offset, size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
        return name, offset, size

    _, names_at, _ = header(shstrndx)
    for i in range(shnum):
        name, offset, size = header(i)
        end = data.index(b"\0", names_at + name)
        if data[names_at + name : end].decode() == wanted:
            return data[offset : offset + size]
    return b""


def fatbin_targets(data: bytes) -> tuple[set[str], set[str]]:
    """(SASS, PTX) targets from the fatbin containers' entry headers.

    Only the executable fatbin (section .nv_fatbin) counts, as for cuobjdump without -all:
    the relocatable copies in __nv_relfatbin are nvlink's input and never reach the driver.

    Container: magic u32, version u16 (1), header size u16 (16), payload size u64; entries:
    kind u16 (1 PTX, 2 ELF), header size u32 at 4, payload size u64 at 8, arch u32 at 28.
    """
    sass: set[str] = set()
    ptx: set[str] = set()
    start = data.find(struct.pack("<I", FATBIN_MAGIC))
    while start >= 0:
        version, header, size = struct.unpack_from("<HHQ", data, start + 4)
        if version == 1 and header == 16 and start + 16 + size <= len(data):
            pos, end = start + 16, start + 16 + size
            while pos + 32 <= end:
                kind, entry_header, payload = struct.unpack_from("<HxxIQ", data, pos)
                (arch,) = struct.unpack_from("<I", data, pos + 28)
                if entry_header == 0:
                    break
                if kind == 2:
                    sass.add(f"sm_{arch}")
                elif kind == 1:
                    ptx.add(f"compute_{arch}")
                pos += entry_header + payload
        start = data.find(struct.pack("<I", FATBIN_MAGIC), start + 4)
    return sass, ptx


def arch_key(target: str) -> tuple[int, str]:
    digits = re.sub(r"\D", "", target)
    return int(digits), target


def cuobjdump_targets(tool: str, lib: Path) -> tuple[set[str], set[str], str | None]:
    """(SASS, PTX, error): what cuobjdump lists, and its fatal line where it gives up part way."""
    found: list[set[str]] = []
    error = None
    for flag, kind in (("--list-elf", "cubin"), ("--list-ptx", "ptx")):
        run = subprocess.run([tool, flag, str(lib)], capture_output=True, text=True)
        text = run.stdout + run.stderr
        if "fatal" in text:
            error = next(x for x in text.splitlines() if "fatal" in x).strip()
        names = re.findall(rf"\.(sm_\d+[af]?)\.{kind}\b", text)
        found.append({n if kind == "cubin" else n.replace("sm_", "compute_") for n in names})
    return found[0], found[1], error


def loader_behaviour(zf: zipfile.ZipFile, names: set[str]) -> Json:
    """What the release does when no library matches, read from its loader source."""

    def lines(path: str) -> list[str]:
        if path not in names:
            return []
        return zf.read(path).decode("utf-8", "replace").splitlines()

    def at(path: str, pattern: str, after: int = 0) -> int | None:
        for i, text in enumerate(lines(path)[after:], start=after + 1):
            if re.search(pattern, text):
                return i
        return None

    def source(path: str, line: int, note: str) -> Json:
        return {"file": path, "line": line, "text": lines(path)[line - 1].strip(), "note": note}

    ext = "bitsandbytes/cextension.py"
    main = "bitsandbytes/cuda_setup/main.py"
    if (line := at(ext, r"lower = \[v for v in available")) is not None:
        note = (
            "the nearest older library of the same CUDA major, else the nearest newer one; "
            "with none of the same major get_native_library raises (error stub library)"
        )
        return {"behaviour": "nearest", "source": source(ext, line, note)}
    start = at(ext, r"if not cuda_binary_path\.exists\(\)")
    line = None if start is None else at(ext, r"raise RuntimeError", start)
    if start is not None and line is not None and line <= start + 2:
        note = (
            "get_native_library raises; the module then installs an error stub and "
            "every native call fails"
        )
        return {"behaviour": "error", "source": source(ext, line, note)}
    if (line := at(ext, r"Could not find the bitsandbytes CUDA binary")) is not None:
        note = "logs a warning and loads libbitsandbytes_cpu.so instead"
        return {"behaviour": "cpu-fallback", "source": source(ext, line, note)}
    for path in (main, ext):
        if (line := at(path, r"raise Exception\('CUDA SETUP: Setup Failed!'\)")) is not None:
            note = (
                "the missing library with a GPU present raises 'Setup Failed'; lib stays None "
                "and importing bitsandbytes fails ('CUDA Setup failed despite GPU being "
                "available')"
            )
            return {"behaviour": "error", "source": source(path, line, note)}
    legacy = "bitsandbytes/libbitsandbytes.so"
    line = at(ext, r"LoadLibrary\(package_dir / legacy_binary_name\)")
    if line is not None and legacy not in names:
        note = "loads libbitsandbytes.so, which the wheel does not ship: OSError on import"
        return {"behaviour": "error", "source": source(ext, line, note)}
    raise SystemExit(f"no loader pattern recognised in {zf.filename}")


def where(path: str, line: int, text: str) -> Json:
    return {"file": path, "line": line, "text": text.strip()}


def cublaslt_selection(zf: zipfile.ZipFile, names: set[str]) -> Json | None:
    """Which GPUs load the cuBLASLt library rather than *_nocublaslt, from the loader.

    None where the loader never asks for a *_nocublaslt library (0.45 on).
    """
    loaders = ("bitsandbytes/cuda_setup/main.py", "bitsandbytes/cextension.py")
    if not any(p in names and b"nocublaslt" in zf.read(p) for p in loaders):
        return None
    for path in ("bitsandbytes/cuda_setup/main.py", "bitsandbytes/cuda_specs.py"):
        if path not in names:
            continue
        for i, text in enumerate(zf.read(path).decode().splitlines(), start=1):
            if m := re.search(r"has_cublaslt = cc in \[(.*)\]", text):
                ccs = re.findall(r"[\d.]+", m.group(1))
                return {
                    "cublaslt_ccs": ccs,
                    "source": {"file": path, "line": i, "text": text.strip()},
                }
            if re.search(r"int\(cc_major\) == 7 and int\(cc_minor\) < 5|>= \(7, 5\)", text):
                return {
                    "cublaslt_from": "7.5",
                    "source": {"file": path, "line": i, "text": text.strip()},
                }
    return None


def read_release(args: tuple[str, str, str]) -> Json:
    version, wheel_path, tool = args
    wheel = Path(wheel_path)
    libraries: list[Json] = []
    checked = 0
    with zipfile.ZipFile(wheel) as zf, tempfile.TemporaryDirectory() as tmp:
        names = set(zf.namelist())
        cpu = False
        for name in sorted(names):
            m = LIB.match(name)
            if not m:
                continue
            if m.group(1) == "cpu":
                cpu = True
                continue
            path = Path(tmp) / Path(name).name
            path.write_bytes(zf.read(name))
            by_header = fatbin_targets(elf_section(path.read_bytes(), ".nv_fatbin"))
            listed_sass, listed_ptx, error = cuobjdump_targets(tool, path)
            plain = ({t.rstrip("af") for t in listed_sass}, {t.rstrip("af") for t in listed_ptx})
            if error is None:
                if plain != by_header:
                    raise SystemExit(f"{name} in {wheel.name}: cuobjdump {plain} != {by_header}")
                checked += 1
                sass, ptx, read_by = listed_sass, listed_ptx, "cuobjdump"
            else:
                # What cuobjdump listed before giving up must agree with the headers.
                if not (plain[0] <= by_header[0] and plain[1] <= by_header[1]):
                    raise SystemExit(
                        f"{name} in {wheel.name}: cuobjdump {plain} not in {by_header}"
                    )
                sass, ptx = by_header
                reason = re.sub(r" in '[^']*'", "", error.split(": ", 1)[-1])
                read_by = f"fatbin entry headers (cuobjdump stopped: {reason})"
            libraries.append(
                {
                    "file": Path(name).name,
                    "cuda": cuda_of(m.group(2)),
                    "cublaslt": m.group(3) is None,
                    "sass": sorted(sass, key=arch_key),
                    "ptx": sorted(ptx, key=arch_key),
                    "read_by": read_by,
                }
            )
            path.unlink()
        libraries.sort(key=lambda lib: (Version(lib["cuda"]), not lib["cublaslt"]))
        row: Json = {
            "release": version,
            "wheel": wheel.name,
            "libraries": libraries,
            "no_match": loader_behaviour(zf, names),
            "cublaslt_selection": cublaslt_selection(zf, names),
            "cpu_library": cpu,
            "cuobjdump_agreed": checked,
        }
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cache", type=Path, default=Path("/work/wheelcache/bitsandbytes"))
    parser.add_argument("--cuobjdump", required=True, help="path to the cuobjdump binary")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    listing = subprocess.run(
        [args.cuobjdump, "--version"], capture_output=True, text=True, check=True
    ).stdout
    # "Cuda compilation tools, release 13.5, V13.5.37"
    tool_version = next(x for x in listing.splitlines() if "release" in x).strip()
    versions = registry_versions()
    args.cache.mkdir(parents=True, exist_ok=True)
    jobs = [(v, str(wheel_for(v, args.cache)), args.cuobjdump) for v in versions]
    with ProcessPoolExecutor(args.jobs) as pool:
        releases = list(pool.map(read_release, jobs))
    now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    doc: Json = {
        "schema": "pytest-gpuinfer/bnb-binaries",
        "schema_version": "1",
        "generated_by": "scripts/generate_bnb_binaries.py",
        "generated_at": now,
        "cuobjdump": tool_version,
        "covered": {"bitsandbytes": [r["release"] for r in releases]},
        "releases": releases,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    REGISTRY.parent.mkdir(parents=True, exist_ok=True)
    registry = {
        "command": "pip index versions bitsandbytes",
        "queried_at": now,
        "range": [str(LOW), str(HIGH)],
        "releases": versions,
    }
    REGISTRY.write_text(json.dumps(registry, indent=1) + "\n")
    print(f"{len(releases)} releases -> {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

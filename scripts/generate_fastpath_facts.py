"""Maintainer-run: read the fastpath facts from release artefacts into probes/data/fastpath.json.

transformers (one wheel per minor, the newest patch in the wheel cache, 4.30 to the newest):
whether ``from_pretrained`` takes ``use_flash_attention_2`` / ``attn_implementation``, the
names it accepts, the flash-attn floor it checks, the torch floor for SDPA, whether SDPA is
the default and whether ``to_bettertransformer`` exists. flash-attn (the PyPI sdists; the
CUDA wheels live on GitHub releases): the architectures ``setup.py`` compiles and under
which nvcc, the CUDA toolkit the released wheels are built with (``get_wheel_url``), the
nvcc floor, and the runtime GPU check in ``csrc/flash_attn/flash_api.cpp``, for every
sdist in the cache (all 2.x releases: a release not read is "unconfirmed" to the closed
world, probes/coverage.py). Every fact keeps its file and line.

    python scripts/generate_fastpath_facts.py [--wheels /work/wheelcache]
"""

from __future__ import annotations

import argparse
import json
import re
import tarfile
import zipfile
from pathlib import Path
from typing import Any

from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "probes" / "data" / "fastpath.json"
FIRST_TRANSFORMERS = Version("4.30")

# Released wheels carry no sm_120 kernels: what was looked up, for the record.
SM120_EVIDENCE = (
    "https://github.com/ostris/ai-toolkit/issues/475 (flash-attn 2.8.3, torch cu128, RTX 5090: "
    "'no kernel image is available for execution on the device')",
    "https://github.com/Dao-AILab/flash-attention/issues/1638 (RTX 5090 D, cc 12.0: no kernel "
    "image; open)",
    "https://github.com/Dao-AILab/flash-attention/issues/2361 (building for SM 120 from source "
    "crashes nvcc; the v2.8.3 wheels do not serve sm_120)",
)

Fact = dict[str, Any]


def fact(value: Any, file: str, line: int | None) -> Fact:
    return {"value": value, "file": file, "line": line}


def _lines(text: str) -> list[str]:
    return text.splitlines()


def _find(lines: list[str], pattern: str, start: int = 0) -> int | None:
    rx = re.compile(pattern)
    for i in range(start, len(lines)):
        if rx.search(lines[i]):
            return i
    return None


def _body(lines: list[str], start: int) -> range:
    """Line indexes of the function that starts at ``start`` (up to the next top-level def)."""
    end = start + 1
    while end < len(lines) and not re.match(r"(def |class |@|\S)", lines[end]):
        end += 1
    return range(start, end)


VERSION_LITERAL = re.compile(r'version\.parse\("(\d+(?:\.\d+)+)"\)')


def _flash_floor(utils: list[str], modeling: list[str]) -> Fact | None:
    """The lowest flash-attn transformers accepts on a CUDA torch, from where it checks it."""
    found: list[Fact] = []
    start = _find(utils, r"^def is_flash_attn_2_available")
    if start is not None:
        body = list(_body(utils, start))
        cuda = next((i for i in body if "torch.version.cuda" in utils[i]), None)
        scan = [i for i in body if cuda is None or i > cuda]
        for i in scan:
            if (m := VERSION_LITERAL.search(utils[i])) and "flash_attn" in utils[i]:
                found.append(fact({"op": ">=", "version": m[1]}, "utils/import_utils.py", i + 1))
                break
    assign = _find(utils, r"^_flash_attn_2_available\s*=")
    if assign is not None:
        for i in range(assign, min(assign + 4, len(utils))):
            if m := VERSION_LITERAL.search(utils[i]):
                found.append(fact({"op": ">=", "version": m[1]}, "utils/import_utils.py", i + 1))
                break
    greater = _find(modeling, r'flash_attention_version > version\.parse\("')
    if greater is not None and (m := VERSION_LITERAL.search(modeling[greater])):
        found.append(fact({"op": ">", "version": m[1]}, "modeling_utils.py", greater + 1))
    if not found:
        return None
    return max(found, key=lambda f: (Version(f["value"]["version"]), f["value"]["op"] == ">"))


def _attn_names(modeling: list[str]) -> Fact | None:
    # 4.53+: a registry class; 4.48-4.52: a module-level dict filled by .update({...});
    # 4.36-4.47: a list literal in the check that refuses unknown names.
    mapping = _find(modeling, r"^class AttentionInterface")
    if mapping is not None:
        start = _find(modeling, r"_global_mapping = \{", mapping)
    else:
        start = _find(modeling, r"^ALL_ATTENTION_FUNCTIONS\.update\(")
    if start is not None:
        names = ["eager"]
        for line in modeling[start + 1 : start + 30]:
            if m := re.match(r'\s*"([^"]+)":', line):
                names.append(m[1])
            elif "}" in line:
                break
        return fact(sorted(names), "modeling_utils.py", start + 1)
    listed = _find(modeling, r"_attn_implementation not in \[")
    if listed is not None:
        joined = " ".join(modeling[listed : listed + 8])
        inner = re.search(r"not in \[([^\]]*)\]", joined)
        names = re.findall(r'"([^"]+)"', inner[1]) if inner else []
        return fact(sorted(names), "modeling_utils.py", listed + 1)
    return None


def _sdpa_torch_floor(utils: list[str]) -> Fact | None:
    start = _find(utils, r"^def is_torch_sdpa_available")
    if start is None:
        return None
    last: Fact | None = None
    for i in _body(utils, start):
        if "_torch_version" in utils[i] and (m := VERSION_LITERAL.search(utils[i])):
            last = fact(m[1], "utils/import_utils.py", i + 1)
    # No literal: SDPA is available on every torch this release accepts at all.
    return last or fact(None, "utils/import_utils.py", start + 1)


def _torch_floor(utils: list[str]) -> Fact | None:
    for pattern in (r"Disabling PyTorch because PyTorch >= ", r"_torch_available = version\.parse"):
        i = _find(utils, pattern)
        if i is not None:
            window = utils[max(0, i - 3) : i + 1]
            for offset, line in enumerate(reversed(window)):
                if m := VERSION_LITERAL.search(line):
                    return fact(m[1], "utils/import_utils.py", i + 1 - offset)
    return None


def read_transformers(wheel: Path) -> dict[str, Any]:
    with zipfile.ZipFile(wheel) as zf:
        modeling = _lines(zf.read("transformers/modeling_utils.py").decode())
        utils = _lines(zf.read("transformers/utils/import_utils.py").decode())
    pop_fa2 = _find(modeling, r'kwargs\.pop\("use_flash_attention_2"')
    pop_attn = _find(modeling, r'kwargs\.pop\("attn_implementation"|attn_implementation: Optional')
    default = _find(
        modeling,
        r'in \[None, "sdpa"\]|in \(None, "sdpa"\)|Sdpa is the default|sdpa.*is the default',
    )
    bt = _find(modeling, r"def to_bettertransformer\(")
    return {
        "use_flash_attention_2": fact(pop_fa2 is not None, "modeling_utils.py", _line(pop_fa2)),
        "attn_implementation": fact(pop_attn is not None, "modeling_utils.py", _line(pop_attn)),
        "attn_names": _attn_names(modeling) or fact([], "modeling_utils.py", None),
        "flash_attn_floor": _flash_floor(utils, modeling),
        "sdpa_torch_floor": _sdpa_torch_floor(utils),
        "torch_floor": _torch_floor(utils),
        "sdpa_default": fact(default is not None, "modeling_utils.py", _line(default)),
        "to_bettertransformer": fact(bt is not None, "modeling_utils.py", _line(bt)),
    }


def _line(index: int | None) -> int | None:
    return None if index is None else index + 1


def read_flash_attn(sdist: Path) -> dict[str, Any]:
    with tarfile.open(sdist) as tf:
        top = sdist.name.removesuffix(".tar.gz")
        setup = _lines(_member(tf, f"{top}/setup.py"))
        api = _lines(_member(tf, f"{top}/csrc/flash_attn/flash_api.cpp"))
    archs: list[Fact] = []
    for i, line in enumerate(setup):
        m = re.search(r'"arch=compute_(\d+),code=sm_(\d+)"', line)
        if not m or line.lstrip().startswith("#"):
            continue
        nvcc = None
        for back in range(i, max(-1, i - 4), -1):
            if c := re.search(r'bare_metal_version >= Version\("([\d.]+)"\)', setup[back]):
                nvcc = c[1]
                break
        archs.append(fact({"sm": m[2], "nvcc_min": nvcc}, "setup.py", i + 1))
    floor = _find(setup, r'bare_metal_version < Version\("')
    wheel = _find(setup, r"^\s*def get_wheel_url")
    wheel_cuda: list[Fact] = []
    if wheel is not None:
        for i in range(wheel, len(setup)):
            if i > wheel and re.match(r"\S", setup[i]):
                break
            for v in re.findall(r'parse\("(\d+\.\d+)"\)', setup[i]):
                wheel_cuda.append(fact(v, "setup.py", i + 1))
    gate = _runtime_gate(api)
    nvcc_floor = None
    if floor is not None and (m := re.search(r'Version\("([\d.]+)"\)', setup[floor])):
        nvcc_floor = fact(m[1], "setup.py", floor + 1)
    return {"archs": archs, "nvcc_floor": nvcc_floor, "wheel_cuda": wheel_cuda, "gpu_check": gate}


def _member(tf: tarfile.TarFile, name: str) -> str:
    handle = tf.extractfile(name)
    if handle is None:
        raise SystemExit(f"{name} is not a file in the sdist")
    return handle.read().decode()


def _runtime_gate(api: list[str]) -> Fact:
    """The compute capabilities ``mha_fwd`` accepts: [major, minor-op, minor] triples."""
    check = _find(api, r"TORCH_CHECK\(.*only supports Ampere GPUs or newer")
    if check is None:
        raise SystemExit("flash_api.cpp has no Ampere check")
    accepted: list[list[Any]] = []
    for i in range(max(0, check - 4), check):
        if api[i].lstrip().startswith("//"):
            continue
        # "dprops->major == 8 && dprops->minor >= 0" (2.0-2.7.0), "cc_major == 8 && cc_minor
        # >= 0" (2.7.1-2.7.2)
        if m := re.search(
            r"major\s*==\s*(\d+)\s*&&\s*(?:dprops->|cc_)minor\s*(==|>=)\s*(\d+)", api[i]
        ):
            accepted.append([int(m[1]), m[2], int(m[3])])
        elif m := re.search(r"(?:cc_major|major)\s*>=\s*(\d+)", api[i]):
            accepted.append([int(m[1]), "any", 0])
    return fact(accepted, "csrc/flash_attn/flash_api.cpp", check + 1)


def newest_per_minor(paths: list[Path], name: str) -> dict[str, Path]:
    best: dict[tuple[int, int], tuple[Version, Path]] = {}
    for path in paths:
        raw = path.name.removeprefix(f"{name}-").split("-")[0].removesuffix(".tar.gz")
        v = Version(raw)
        if v.is_prerelease:
            continue
        key = (v.major, v.minor)
        if key not in best or v > best[key][0]:
            best[key] = (v, path)
    return {str(v): p for _, (v, p) in sorted(best.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, default=Path("/work/wheelcache"))
    args = parser.parse_args()
    wheels = newest_per_minor(
        sorted((args.wheels / "transformers").glob("transformers-*-py3-none-any.whl")),
        "transformers",
    )
    transformers = {
        v: read_transformers(p) for v, p in wheels.items() if Version(v) >= FIRST_TRANSFORMERS
    }
    sdists = sorted((args.wheels / "flash-attn").glob("flash_attn-*.tar.gz"))
    flash = {
        p.name.removeprefix("flash_attn-").removesuffix(".tar.gz"): read_flash_attn(p)
        for p in sorted(sdists, key=lambda p: Version(p.name[11:-7]))
    }
    data = {
        "generated_by": "scripts/generate_fastpath_facts.py",
        "covered": {"transformers": list(transformers), "flash-attn": list(flash)},
        "transformers": transformers,
        "flash-attn": flash,
        "sm120_released_wheels": {"value": False, "sources": list(SM120_EVIDENCE)},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT}: {len(transformers)} transformers, {len(flash)} flash-attn releases")


if __name__ == "__main__":
    main()

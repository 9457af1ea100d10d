"""Simulated GPU profiles: judge hardware you do not have.

A profile names a GPU model (compute capability, memory, bandwidth), how many of them
the machine has, and optionally the software versions to assume instead of this
machine's. Built-in profiles and user files (JSON or TOML) share one schema::

    name = "t4-old-bnb"
    base = "t4"                      # optional: start from a built-in profile
    gpu_name = "Tesla T4"
    compute_capability = "7.5"
    memory = "15360MiB"              # per GPU, accelerate-style string or bytes
    memory_bandwidth_gb_per_s = 320
    gpu_count = 1
    torch_cuda = "12.6"              # optional: the CUDA build of torch to assume
    [software]                       # optional: versions that replace this machine's
    bitsandbytes = "0.36.0"

On the command line ``t4@bitsandbytes=0.36.0,transformers=4.30.0`` is shorthand for a
built-in profile with software overrides. Only the packages the rules read may be
overridden (``OVERRIDABLE_PACKAGES``); torch's CUDA build rides on its version as the
official wheels name it (``torch=2.6.0+cu118``, ``torch=2.6.0+cpu``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from pytest_gpuinfer.probes.architectures import (
    architecture_name,
    has_tensor_cores,
    parse_compute_capability,
)
from pytest_gpuinfer.probes.errors import InputError
from pytest_gpuinfer.probes.gpu_profiles import CURRENT_ALIASES, CURRENT_SPECS
from pytest_gpuinfer.probes.platforms import PLATFORMS
from pytest_gpuinfer.probes.report import GPUInfo

_MIB = 1024**2


@dataclass(frozen=True)
class Profile:
    name: str
    gpu_name: str
    compute_capability: tuple[int, int]
    memory_bytes: int
    memory_bandwidth_gb_per_s: float
    gpu_count: int = 1
    torch_cuda: str | None = None
    software: Mapping[str, str] = field(default_factory=dict)
    source: str = "built-in"
    platform: str = "x86_64"
    """ "x86_64", "aarch64" (an Arm server such as GH200) or "tegra" (Jetson)."""
    figures_source: str = ""
    """Where a built-in profile's figures come from (datasheets, spec pages)."""

    @property
    def assumes_cuda_torch(self) -> bool:
        """True when no CUDA build is named: the best official build of torch is assumed."""
        torch = self.software.get("torch", "")
        return self.torch_cuda is None and not torch.endswith("+cpu")

    def gpus(self) -> list[GPUInfo]:
        """The profile's GPUs; free memory is assumed equal to total (an idle card)."""
        return [
            GPUInfo(
                index=i,
                cuda_ordinal=i,
                name=self.gpu_name,
                compute_capability=self.compute_capability,
                architecture=architecture_name(self.compute_capability),
                total_memory_bytes=self.memory_bytes,
                free_memory_bytes=self.memory_bytes,
                used_memory_bytes=0,
                memory_bandwidth_gb_per_s=self.memory_bandwidth_gb_per_s,
                has_tensor_cores=has_tensor_cores(self.compute_capability, self.gpu_name),
                simulated=True,
            )
            for i in range(self.gpu_count)
        ]


def _builtin(
    name: str, gpu_name: str, cc: str, memory_mib: int, bandwidth: float, count: int = 1
) -> Profile:
    return Profile(
        name=name,
        gpu_name=gpu_name,
        compute_capability=parse_compute_capability(cc),
        memory_bytes=memory_mib * _MIB,
        memory_bandwidth_gb_per_s=bandwidth,
        gpu_count=count,
    )


# Memory is what NVML reports as total on each part (MiB); bandwidth from NVIDIA's
# datasheets (GB/s). K80 is one of the board's two GPUs, as clouds rent it.
BUILTIN_PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        _builtin("k80", "Tesla K80", "3.7", 11441, 240),
        _builtin("p100", "Tesla P100-PCIE-16GB", "6.0", 16280, 732),
        _builtin("p40", "Tesla P40", "6.1", 22919, 346),
        _builtin("v100", "Tesla V100-SXM2-16GB", "7.0", 16160, 900),
        _builtin("t4", "Tesla T4", "7.5", 15360, 320),
        _builtin("gtx1660", "NVIDIA GeForce GTX 1660", "7.5", 6144, 192),
        _builtin("a10", "NVIDIA A10", "8.6", 23028, 600),
        _builtin("a100-40gb", "NVIDIA A100-SXM4-40GB", "8.0", 40960, 1555),
        _builtin("a100-80gb", "NVIDIA A100-SXM4-80GB", "8.0", 81920, 2039),
        _builtin("l4", "NVIDIA L4", "8.9", 23034, 300),
        _builtin("rtx3090", "NVIDIA GeForce RTX 3090", "8.6", 24576, 936),
        _builtin("rtx4090", "NVIDIA GeForce RTX 4090", "8.9", 24564, 1008),
        _builtin("h100", "NVIDIA H100 80GB HBM3", "9.0", 81559, 3350),
        _builtin("h200", "NVIDIA H200", "9.0", 143771, 4800),
        _builtin("b200", "NVIDIA B200", "10.0", 183359, 8000),
    )
}
BUILTIN_PROFILES.update(
    (
        spec.name,
        replace(
            _builtin(
                spec.name,
                spec.gpu_name,
                spec.compute_capability,
                spec.memory_mib,
                spec.memory_bandwidth_gb_per_s,
                spec.gpu_count,
            ),
            platform=spec.platform,
            figures_source=spec.source,
        ),
    )
    for spec in CURRENT_SPECS
)

_ALIASES = {
    "a100": "a100-40gb",
    "gtx-1660": "gtx1660",
    "rtx-3090": "rtx3090",
    "rtx-4090": "rtx4090",
    **CURRENT_ALIASES,
}

_KEYS = {
    "name",
    "base",
    "gpu_name",
    "compute_capability",
    "memory",
    "memory_bandwidth_gb_per_s",
    "gpu_count",
    "torch_cuda",
    "software",
    "platform",
}
_REQUIRED_WITHOUT_BASE = ("gpu_name", "compute_capability", "memory", "memory_bandwidth_gb_per_s")

# Upper bounds for a profile file's numbers: generous for any machine that exists, small
# enough that a typo (gpu_count = 10**12) is an error at once instead of a machine
# built in memory GPU by GPU.
MAX_GPU_COUNT = 1024
MAX_MEMORY_BYTES = 2**50  # 1 PiB per GPU
MIN_MEMORY_BYTES = 256 * 2**20  # a bare "16" (bytes) is a typo, not a GPU
MAX_BANDWIDTH_GB_PER_S = 1_000_000.0
MAX_COMPUTE_CAPABILITY_MAJOR = 99


def _builtin_by_name(name: str) -> Profile | None:
    key = name.strip().lower()
    return BUILTIN_PROFILES.get(_ALIASES.get(key, key))


OVERRIDABLE_PACKAGES: tuple[str, ...] = (
    "accelerate",
    "bitsandbytes",
    "flash-attn",
    "optimum",
    "torch",
    "transformers",
)
"""The packages whose versions the rules read, so the only ones a profile may override."""

_JETPACK_LOCAL = re.compile(r"(^|\.)nv\d{2}\.\d{1,2}$")
_ACCEPTED = f"accepted names: {', '.join(OVERRIDABLE_PACKAGES)}"


def _package_name(raw: object, where: str) -> str:
    name = re.sub(r"[-_.]+", "-", str(raw).strip()).lower()
    if name == "torch-cuda":
        raise InputError(
            f"{where}: {str(raw).strip()!r} is not a package; name torch's CUDA build in its "
            f"version (torch=2.6.0+cu126) or set torch_cuda in a profile file; {_ACCEPTED}"
        )
    if name not in OVERRIDABLE_PACKAGES:
        raise InputError(f"{where}: unknown package {str(raw).strip()!r}; {_ACCEPTED}")
    return name


def _check_version(package: str, version: object, where: str) -> str:
    if not isinstance(version, str):
        raise InputError(
            f'{where}: version of {package!r} must be a string like "0.36.0", got {version!r}'
        )
    try:
        parsed = Version(version)
    except InvalidVersion:
        raise InputError(
            f"{where}: version {version!r} of {package!r} is not a valid version (e.g. 0.36.0)"
        ) from None
    local = parsed.local
    if local is not None and (
        package != "torch"
        or not (local == "cpu" or re.fullmatch(r"cu\d{3,}", local) or _JETPACK_LOCAL.search(local))
    ):
        raise InputError(
            f"{where}: version {version!r} of {package!r} has a local label "
            "(only torch takes one: +cpu or +cuXYZ, e.g. torch=2.6.0+cu118, or a JetPack "
            "build's +<commit>.nvYY.MM)"
        )
    return version


def _parse_overrides(text: str, where: str) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        raw, sep, version = item.partition("=")
        if not sep or not raw.strip():
            raise InputError(
                f"{where}: override {item!r} is not of the form PACKAGE=VERSION "
                f"(e.g. bitsandbytes=0.36.0); {_ACCEPTED}"
            )
        package = _package_name(raw, where)
        if package in overrides:
            raise InputError(
                f"{where}: {package!r} is given twice ({overrides[package]}, "
                f"{version.strip()}); give each package once"
            )
        overrides[package] = _check_version(package, version.strip().lstrip("="), where)
    return overrides


def _torch_cuda_of(software: Mapping[str, str], torch_cuda: str | None, where: str) -> str | None:
    """The CUDA build named by ``torch_cuda`` or a ``+cuXYZ`` torch override (they must agree)."""
    from pytest_gpuinfer.probes.builds import cuda_from_local_label

    labelled = cuda_from_local_label(software.get("torch", ""))
    if labelled and torch_cuda and labelled != torch_cuda:
        raise InputError(
            f"{where}: torch_cuda {torch_cuda!r} disagrees with torch {software['torch']!r}; "
            "name the CUDA build once"
        )
    if software.get("torch", "").endswith("+cpu") and torch_cuda:
        raise InputError(
            f"{where}: torch_cuda {torch_cuda!r} given with a CPU build of torch "
            f"({software['torch']!r})"
        )
    return labelled or torch_cuda


def profile_from_mapping(data: Mapping[str, Any], *, source: str) -> Profile:
    """Validate one profile mapping; InputError names the file and the bad key or value."""
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise InputError(
            f"profile {source}: unknown key {unknown[0]!r}; "
            f"expected keys: {', '.join(sorted(_KEYS))}"
        )
    base: Profile | None = None
    if "base" in data:
        base = _builtin_by_name(str(data["base"]))
        if base is None:
            raise InputError(
                f"profile {source}: base {data['base']!r} is not a built-in profile; "
                f"expected one of: {', '.join(BUILTIN_PROFILES)}"
            )
    else:
        missing = [key for key in _REQUIRED_WITHOUT_BASE if key not in data]
        if missing:
            raise InputError(
                f"profile {source}: missing key {missing[0]!r} (required unless 'base' names "
                "a built-in profile)"
            )
    name = data.get("name", base.name if base else Path(source).stem)
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"profile {source}: 'name' must be a non-empty string, got {name!r}")

    gpu_name = data.get("gpu_name", base.gpu_name if base else None)
    if not isinstance(gpu_name, str) or not gpu_name.strip():
        raise InputError(
            f"profile {source}: 'gpu_name' must be a non-empty string, got {gpu_name!r}"
        )

    if "compute_capability" in data:
        raw_capability = data["compute_capability"]
        if isinstance(raw_capability, bool) or not isinstance(raw_capability, (str, int, float)):
            raise InputError(
                f"profile {source}: 'compute_capability' must be a string like \"8.6\", "
                f"got {raw_capability!r}"
            )
        try:
            capability = parse_compute_capability(str(raw_capability))
        except ValueError as error:
            raise InputError(f"profile {source}: {error}") from None
        if not 1 <= capability[0] <= MAX_COMPUTE_CAPABILITY_MAJOR or capability[1] > 9:
            raise InputError(
                f"profile {source}: 'compute_capability' {raw_capability!r} is out of range; "
                f"expected MAJOR.MINOR with MAJOR 1-{MAX_COMPUTE_CAPABILITY_MAJOR} and MINOR 0-9"
            )
    else:
        assert base is not None
        capability = base.compute_capability

    if "memory" in data:
        from pytest_gpuinfer.probes.memory_units import parse_memory

        written = data["memory"]
        if not isinstance(written, str) or written.strip().isdigit():
            raise InputError(
                f"profile {source}: 'memory' must be a size with its unit such as \"16GiB\", "
                f"got {written!r}"
            )
        memory = parse_memory(written, what=f"profile {source}: 'memory'")
        if memory <= 0 or memory > MAX_MEMORY_BYTES:
            raise InputError(
                f"profile {source}: 'memory' must be positive and at most 1PiB per GPU, "
                f"got {written!r}"
            )
        if memory < MIN_MEMORY_BYTES:
            raise InputError(
                f"profile {source}: 'memory' must be at least 256MiB per GPU (no GPU has "
                f"less), got {written!r}"
            )
    else:
        assert base is not None
        memory = base.memory_bytes

    bandwidth = data.get(
        "memory_bandwidth_gb_per_s", base.memory_bandwidth_gb_per_s if base else None
    )
    if (
        isinstance(bandwidth, bool)
        or not isinstance(bandwidth, (int, float))
        # written as a negated range so that NaN fails too
        or not 0 < bandwidth <= MAX_BANDWIDTH_GB_PER_S
    ):
        raise InputError(
            f"profile {source}: 'memory_bandwidth_gb_per_s' must be a number above 0 and at "
            f"most {MAX_BANDWIDTH_GB_PER_S:,.0f}, got {bandwidth!r}"
        )
    count = data.get("gpu_count", base.gpu_count if base else 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_GPU_COUNT:
        raise InputError(
            f"profile {source}: 'gpu_count' must be an integer >= 1, got {count!r} "
            f"(at most {MAX_GPU_COUNT})"
        )

    torch_cuda = data.get("torch_cuda", base.torch_cuda if base else None)
    if torch_cuda is not None and (
        isinstance(torch_cuda, bool) or not re.fullmatch(r"\d{1,3}\.\d{1,3}", str(torch_cuda))
    ):
        raise InputError(
            f"profile {source}: 'torch_cuda' must look like \"12.6\", got {torch_cuda!r}"
        )
    software = dict(base.software) if base else {}
    raw_software = data.get("software", {})
    if not isinstance(raw_software, Mapping):
        raise InputError(
            f"profile {source}: 'software' must be a table of PACKAGE = \"VERSION\", "
            f"got {raw_software!r}"
        )
    for raw_name, version in raw_software.items():
        package = _package_name(raw_name, f"profile {source}")
        software[package] = _check_version(package, version, f"profile {source}")
    torch_cuda = _torch_cuda_of(
        software, None if torch_cuda is None else str(torch_cuda), f"profile {source}"
    )
    platform = data.get("platform", base.platform if base else "x86_64")
    if platform not in PLATFORMS:
        raise InputError(
            f"profile {source}: 'platform' must be one of: {', '.join(PLATFORMS)}, got {platform!r}"
        )
    return Profile(
        name=name.strip(),
        gpu_name=gpu_name.strip(),
        compute_capability=capability,
        memory_bytes=memory,
        memory_bandwidth_gb_per_s=float(bandwidth),
        gpu_count=count,
        torch_cuda=None if torch_cuda is None else str(torch_cuda),
        software=software,
        source=source,
        platform=platform,
        figures_source=base.figures_source if base and not _NEW_FIGURES & set(data) else "",
    )


_NEW_FIGURES = {"gpu_name", "compute_capability", "memory", "memory_bandwidth_gb_per_s"}


def _read_file(path: Path) -> Mapping[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise InputError(f"profile file {path}: cannot be read ({error.strerror})") from None
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            data: object = tomllib.loads(raw.decode("utf-8"))
        else:
            data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(f"profile file {path}: not valid {kind} ({detail})") from None
    if not isinstance(data, Mapping):
        raise InputError(f"profile file {path}: expected a table/object, got {type(data).__name__}")
    return data


def load_profile(spec: str | Path) -> Profile:
    """A built-in name (with optional ``@pkg=ver,...`` overrides) or a JSON/TOML file."""
    text = str(spec).strip()
    if not text:
        raise InputError(
            f"profile name is empty; expected one of: {', '.join(BUILTIN_PROFILES)} or a file"
        )
    path = Path(text)
    if path.suffix.lower() in (".json", ".toml") or path.exists():
        if path.is_dir():
            raise InputError(
                f"profile file {path} is a directory; expected a .json or .toml profile file"
            )
        if not path.is_file():
            raise InputError(f"profile file {path} does not exist")
        return profile_from_mapping(_read_file(path), source=str(path))
    name, _, overrides = text.partition("@")
    profile = _builtin_by_name(name)
    if profile is None:
        raise InputError(
            f"unknown profile {name!r}; expected one of: {', '.join(BUILTIN_PROFILES)} "
            "or a .json/.toml profile file"
        )
    if overrides:
        where = f"profile {text!r}"
        software = {**profile.software, **_parse_overrides(overrides, where)}
        torch_cuda = _torch_cuda_of(software, profile.torch_cuda, where)
        profile = replace(profile, software=software, name=text, torch_cuda=torch_cuda)
    elif "@" in text:
        raise InputError(
            f"profile {text!r}: nothing after '@'; expected PACKAGE=VERSION,...; {_ACCEPTED}"
        )
    return profile

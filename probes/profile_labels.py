"""A simulated profile from a Kubernetes node's GPU feature discovery labels.

The labels are NVIDIA GPU feature discovery's (k8s-device-plugin, docs/gpu-feature-discovery
README "Generated Labels"; internal/lm/resource.go): ``nvidia.com/gpu.product`` (the NVML
name with spaces as ``-``), ``nvidia.com/gpu.compute.major`` / ``.minor``,
``nvidia.com/gpu.memory`` (NVML's total per GPU in MiB; the README says "Mb") and
``nvidia.com/gpu.count``. The input is what ``kubectl get node NODE -o json`` has under
``.metadata.labels`` (a JSON object, or the whole node object), or ``key=value`` lines as
``kubectl get node --show-labels`` or an NFD features file gives them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from pytest_gpuinfer.probes.errors import InputError
from pytest_gpuinfer.probes.profiles import BUILTIN_PROFILES, Profile, profile_from_mapping

PRODUCT = "nvidia.com/gpu.product"
COMPUTE_MAJOR = "nvidia.com/gpu.compute.major"
COMPUTE_MINOR = "nvidia.com/gpu.compute.minor"
MEMORY_MIB = "nvidia.com/gpu.memory"
COUNT = "nvidia.com/gpu.count"
REQUIRED = (PRODUCT, COMPUTE_MAJOR, COMPUTE_MINOR, MEMORY_MIB)


def gfd_product(gpu_name: str) -> str:
    """The ``nvidia.com/gpu.product`` value GFD writes for an NVML name."""
    return gpu_name.strip().replace(" ", "-")


def read_labels(path: Path) -> dict[str, str]:
    """Labels from a file: a JSON object (labels, or a node with ``metadata.labels``), or
    ``key=value`` lines (commas between pairs are accepted too)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(f"labels file {path}: cannot be read ({error.strerror})") from None
    except UnicodeDecodeError:
        raise InputError(f"labels file {path}: not UTF-8 text") from None
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as error:
            raise InputError(f"labels file {path}: not valid JSON ({error})") from None
        if isinstance(data, Mapping) and isinstance(data.get("metadata"), Mapping):
            data = data["metadata"].get("labels", {})
        if not isinstance(data, Mapping):
            raise InputError(f"labels file {path}: expected an object of labels")
        return {str(k): str(v) for k, v in data.items()}
    labels: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        for item in filter(None, (part.strip() for part in line.split(","))):
            if item.startswith("#"):
                break
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise InputError(
                    f"labels file {path}, line {number}: {item!r} is not key=value "
                    "(expected labels as `kubectl get node -o json` .metadata.labels gives)"
                )
            labels[key.strip()] = value.strip()
    return labels


def _int(labels: Mapping[str, str], key: str, source: str) -> int:
    raw = labels[key]
    if not raw.strip().isdigit():
        raise InputError(f"labels {source}: {key}={raw!r} is not a whole number")
    return int(raw)


def profile_from_labels(labels: Mapping[str, str], *, source: str) -> Profile:
    """The node's GPU as a profile; bandwidth from the built-in profile of the same product
    (InputError when no built-in profile names it: give a profile file instead)."""
    missing = [key for key in REQUIRED if not labels.get(key, "").strip()]
    if missing:
        raise InputError(
            f"labels {source}: missing {', '.join(missing)}; expected NVIDIA GPU feature "
            "discovery labels (is GFD running on that node?)"
        )
    product = labels[PRODUCT].strip()
    major = _int(labels, COMPUTE_MAJOR, source)
    minor = _int(labels, COMPUTE_MINOR, source)
    memory_mib = _int(labels, MEMORY_MIB, source)
    count = _int(labels, COUNT, source) if labels.get(COUNT, "").strip() else 1
    if count < 1:
        raise InputError(f"labels {source}: {COUNT}={count} but the profile needs a GPU")
    same = [
        p
        for p in BUILTIN_PROFILES.values()
        if gfd_product(p.gpu_name).lower() == product.lower()
        or gfd_product(p.gpu_name).lower().removeprefix("nvidia-")
        == product.lower().removeprefix("nvidia-")
    ]
    if not same:
        raise InputError(
            f"labels {source}: {PRODUCT}={product!r} matches no built-in profile, so its "
            "memory bandwidth is unknown; write a profile file (docs/audit.md) instead"
        )
    return profile_from_mapping(
        {
            "name": f"labels:{product}",
            "gpu_name": same[0].gpu_name,
            "compute_capability": f"{major}.{minor}",
            "memory": f"{memory_mib}MiB",
            "memory_bandwidth_gb_per_s": same[0].memory_bandwidth_gb_per_s,
            "gpu_count": count,
        },
        source=source,
    )

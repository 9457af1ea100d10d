"""Requirements as schedulers take them: Kubernetes labels, DRA CEL, SLURM, Ray, GitHub runners.

From a ``--gpuinfer-requirements`` export (all its GPU tests, or one routed subset), the
suite's need is: the most GPUs a test asks for, the largest per-GPU memory claim, and the
GPU products that meet every test, judged with the plugin's own rules on every profile
the registry holds (``probes.profiles.BUILTIN_PROFILES``, each with its assumed stack where
this machine lacks a package). Schedulers then select those products:

* Kubernetes: ``nodeAffinity`` on NVIDIA GPU feature discovery labels
  (``nvidia.com/gpu.product`` In the products, GFD's spelling: the NVML name with spaces as
  ``-``; ``nvidia.com/gpu.memory`` Gt, in MiB; ``nvidia.com/gpu.count``) and the
  ``nvidia.com/gpu`` limit; label names from k8s-device-plugin's GFD README, "Generated
  Labels", and internal/lm/resource.go;
* DRA: a ResourceClaimTemplate whose CEL selector reads the ``gpu.nvidia.com`` driver's
  ``productName`` attribute and ``memory`` capacity (as its ResourceSlices publish them);
* SLURM: ``--gres=gpu:N`` and ``--constraint`` over node features named after the profiles;
* Ray: ``num_gpus`` and one ``accelerator_type`` (``ray.util.accelerators`` constants);
* GitHub Actions: a matrix of single ``runs-on`` labels, one per eligible runner class.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_gpuinfer.probes.profiles import Profile

FORMATS: tuple[str, ...] = ("k8s", "dra", "slurm", "ray", "github")

_MIB = 2**20

RAY_ACCELERATORS: tuple[tuple[str, str], ...] = (
    # (pattern on the NVML name, ray.util.accelerators constant); A100 sizes are told apart
    # by the constants Ray does not add to nodes by itself (its comment says so).
    (r"\bT4\b", "NVIDIA_TESLA_T4"),
    (r"\bV100\b", "NVIDIA_TESLA_V100"),
    (r"\bP100\b", "NVIDIA_TESLA_P100"),
    (r"\bP4\b", "NVIDIA_TESLA_P4"),
    (r"\bK80\b", "NVIDIA_TESLA_K80"),
    (r"\bA10G\b", "NVIDIA_TESLA_A10G"),
    (r"\bL40S\b", "NVIDIA_L40S"),
    (r"\bL4\b", "NVIDIA_L4"),
    (r"\bA100\b.*\b80GB\b", "NVIDIA_A100_80G"),
    (r"\bA100\b.*\b40GB\b", "NVIDIA_A100_40G"),
    (r"\bH100\b", "NVIDIA_H100"),
    (r"\bH200\b", "NVIDIA_H200"),
    (r"\bH20\b", "NVIDIA_H20"),
    (r"\bB200\b", "NVIDIA_B200"),
)
RAY_VALUES = {
    "NVIDIA_TESLA_T4": "T4",
    "NVIDIA_TESLA_V100": "V100",
    "NVIDIA_TESLA_P100": "P100",
    "NVIDIA_TESLA_P4": "P4",
    "NVIDIA_TESLA_K80": "K80",
    "NVIDIA_TESLA_A10G": "A10G",
    "NVIDIA_L40S": "L40S",
    "NVIDIA_L4": "L4",
    "NVIDIA_A100_80G": "A100-80G",
    "NVIDIA_A100_40G": "A100-40G",
    "NVIDIA_H100": "H100",
    "NVIDIA_H200": "H200",
    "NVIDIA_H20": "H20",
    "NVIDIA_B200": "B200",
}


def ray_accelerator(gpu_name: str) -> str | None:
    """The ``ray.util.accelerators`` constant for a GPU, or None when Ray names none."""
    for pattern, constant in RAY_ACCELERATORS:
        if re.search(pattern, gpu_name):
            return constant
    return None


@dataclass
class SuiteNeed:
    """What the selected tests need together, and the products that meet all of them."""

    tests: int
    gpu_tests: int
    gpus: int
    memory_bytes: int | None
    eligible: list[Profile] = field(default_factory=list)
    """Profiles meeting every selected GPU test, cheapest (least memory) first."""
    refused: dict[str, str] = field(default_factory=dict)
    """Profile name -> the first reason it cannot run a selected test."""

    @property
    def memory_mib(self) -> int | None:
        return None if self.memory_bytes is None else math.ceil(self.memory_bytes / _MIB)


def suite_need(
    export: Mapping[str, Any],
    profiles: Iterable[Profile],
    installed: Mapping[str, str | None],
    nodeids: set[str] | None = None,
) -> SuiteNeed:
    """The need of the export's tests (those in ``nodeids`` when given)."""
    from pytest_gpuinfer.fleet.export import requirements_of_record
    from pytest_gpuinfer.probes.assumed_stack import with_assumed_stack
    from pytest_gpuinfer.probes.probe import probe
    from pytest_gpuinfer.requirements.check import evaluate

    records = [r for r in export.get("tests", []) if nodeids is None or r["nodeid"] in nodeids]
    gpu_records = [r for r in records if r.get("gpu_test", True)]
    gpus = max([int(r.get("gpus") or 1) for r in gpu_records], default=0)
    claims = [
        int(r[key])
        for r in gpu_records
        for key in ("total_memory_bytes", "free_memory_bytes", "memory_need_bytes")
        if r.get(key) is not None
    ]
    need = SuiteNeed(len(records), len(gpu_records), gpus, max(claims, default=None))
    if not gpu_records:
        return need
    parsed = [(r, requirements_of_record(r)) for r in gpu_records]
    for profile in profiles:
        sized = replace(profile, gpu_count=max(profile.gpu_count, gpus))
        report = probe(profile=with_assumed_stack(sized, installed))
        for record, requirements in parsed:
            why = evaluate(requirements, report, mode=record.get("mode"))
            if why:
                need.refused[profile.name] = f"{record['nodeid']}: {'; '.join(why)}"
                break
        else:
            need.eligible.append(profile)
    need.eligible.sort(key=lambda p: (p.memory_bytes, -p.memory_bandwidth_gb_per_s, p.name))
    return need


def _products(need: SuiteNeed) -> list[str]:
    from pytest_gpuinfer.probes.profile_labels import gfd_product

    return list(dict.fromkeys(gfd_product(p.gpu_name) for p in need.eligible))


def kubernetes(need: SuiteNeed) -> dict[str, Any]:
    """A pod spec fragment: the GPU limit and a required node affinity on GFD labels."""
    expressions: list[dict[str, Any]] = [
        {"key": "nvidia.com/gpu.product", "operator": "In", "values": _products(need)}
    ]
    if need.memory_mib is not None:
        expressions.append(
            {"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": [str(need.memory_mib - 1)]}
        )
    if need.gpus > 1:
        expressions.append(
            {"key": "nvidia.com/gpu.count", "operator": "Gt", "values": [str(need.gpus - 1)]}
        )
    return {
        "resources": {"limits": {"nvidia.com/gpu": need.gpus}},
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": expressions}]
                }
            }
        },
    }


def dra_selector(need: SuiteNeed) -> str:
    """The CEL expression a DRA device request selects one GPU with."""
    names = ", ".join(f'"{n}"' for n in dict.fromkeys(p.gpu_name for p in need.eligible))
    cel = f'device.attributes["gpu.nvidia.com"].productName in [{names}]'
    if need.memory_mib is not None:
        cel += (
            f' && device.capacity["gpu.nvidia.com"].memory.compareTo('
            f'quantity("{need.memory_mib}Mi")) >= 0'
        )
    return cel


def dra(need: SuiteNeed, name: str = "gpuinfer-gpus") -> dict[str, Any]:
    """A ``resource.k8s.io/v1`` ResourceClaimTemplate asking for the suite's GPUs."""
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": name},
        "spec": {
            "spec": {
                "devices": {
                    "requests": [
                        {
                            "name": "gpu",
                            "exactly": {
                                "deviceClassName": "gpu.nvidia.com",
                                "count": need.gpus,
                                "selectors": [{"cel": {"expression": dra_selector(need)}}],
                            },
                        }
                    ]
                }
            }
        },
    }


def slurm(need: SuiteNeed) -> list[str]:
    """``#SBATCH`` lines: the GPU count, and node features named after the profiles."""
    features = "|".join(p.name for p in need.eligible)
    return [f"#SBATCH --gres=gpu:{need.gpus}", f'#SBATCH --constraint="{features}"']


def ray(need: SuiteNeed) -> list[str]:
    """A ``@ray.remote`` line on the cheapest eligible GPU Ray names."""
    constants = [c for c in (ray_accelerator(p.gpu_name) for p in need.eligible) if c]
    constants = list(dict.fromkeys(constants))
    if not constants:
        return [
            "# no eligible GPU has a ray.util.accelerators constant; num_gpus only",
            f"@ray.remote(num_gpus={need.gpus})",
        ]
    lines = [f"from ray.util.accelerators import {constants[0]}  # {RAY_VALUES[constants[0]]}"]
    if len(constants) > 1:
        others = ", ".join(f"{c} ({RAY_VALUES[c]})" for c in constants[1:])
        lines.append(f"# Ray takes one accelerator_type; these run it too: {others}")
    if constants[0] in ("NVIDIA_A100_40G", "NVIDIA_A100_80G"):
        lines.append("# Ray does not add the A100 size labels to nodes by itself: add them")
    lines.append(f"@ray.remote(num_gpus={need.gpus}, accelerator_type={constants[0]})")
    return lines


def github(need: SuiteNeed) -> dict[str, Any]:
    """A matrix of single ``runs-on`` labels: name each runner scale set after a profile."""
    return {"include": [{"runner": p.name, "runs-on": p.name} for p in need.eligible]}


def to_yaml(value: Any, indent: int = 0) -> str:
    """A small YAML writer for the dicts, lists, strings and numbers above."""
    pad = " " * indent
    if isinstance(value, Mapping):
        lines = []
        for key, item in value.items():
            if isinstance(item, (Mapping, list)) and item:
                lines.append(f"{pad}{key}:\n{to_yaml(item, indent + 2)}")
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}")
        return "\n".join(lines)
    if isinstance(value, list):
        lines = []
        for item in value:
            if isinstance(item, Mapping) and item:
                text = to_yaml(item, indent + 2)
                lines.append(f"{pad}- {text[indent + 2 :]}")
            else:
                lines.append(f"{pad}- {_scalar(item)}")
        return "\n".join(lines)
    return pad + _scalar(value)


def _scalar(value: Any) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (Mapping, list)):
        return "{}" if isinstance(value, Mapping) else "[]"
    return json.dumps(str(value))


def render(need: SuiteNeed, fmt: str) -> str:
    import json

    if fmt == "k8s":
        return to_yaml(kubernetes(need))
    if fmt == "dra":
        return to_yaml(dra(need))
    if fmt == "slurm":
        return "\n".join(slurm(need))
    if fmt == "ray":
        return "\n".join(ray(need))
    if fmt == "github":
        return json.dumps(github(need))
    raise ValueError(fmt)


def summary(need: SuiteNeed) -> list[str]:
    """What the export was made from, for stderr."""
    lines = [
        f"{need.gpu_tests} of {need.tests} tests need a GPU: {need.gpus} GPU(s) each, "
        + (
            f"{need.memory_mib} MiB per GPU claimed"
            if need.memory_mib is not None
            else "no memory claimed"
        ),
        "runs on: " + (", ".join(p.name for p in need.eligible) or "no profile"),
    ]
    lines += [f"not on {name}: {why}" for name, why in need.refused.items()]
    return lines


def eligible_names(need: SuiteNeed) -> Sequence[str]:
    return [p.name for p in need.eligible]

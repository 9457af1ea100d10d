"""``gpuinfer env``: one block to paste into a bug report, as ``transformers env`` gives.

Versions come from the installed distributions' metadata and torch's ``version.py`` read as
text (nothing of the stack is imported); GPUs, driver and health come from NVML, which
never initialises CUDA. ``--json``: schema ``pytest-gpuinfer/env`` 1.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from typing import Any

ENVIRONMENT_VARIABLES: tuple[str, ...] = (
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "PYTORCH_CUDA_ALLOC_CONF",
    "PYTORCH_ALLOC_CONF",
)
PACKAGES: tuple[str, ...] = (
    "torch",
    "transformers",
    "accelerate",
    "bitsandbytes",
    "optimum",
    "flash-attn",
    "nvidia-ml-py",
    "pytest",
)


def add_parser(sub: Any) -> None:
    """Register ``env`` on the ``gpuinfer`` subcommand parser."""
    env = sub.add_parser("env", help="print this machine's stack and GPUs, for a bug report")
    env.add_argument("--json", action="store_true", help="the same facts as JSON")
    env.set_defaults(func=run)


def collect(environ: Mapping[str, str]) -> dict[str, Any]:
    """Every fact of the block, as the JSON the ``--json`` flag prints."""
    from pytest_gpuinfer.probes.alloc_conf import allocator_config
    from pytest_gpuinfer.probes.nvml import probe_nvml
    from pytest_gpuinfer.probes.nvml_health import assess
    from pytest_gpuinfer.probes.software import probe_software
    from pytest_gpuinfer.schemas import ENV

    software = probe_software()
    nvml = probe_nvml(environ)
    gpus = []
    for gpu in nvml.gpus:
        notes, degraded = assess(gpu.index, gpu.health)
        gpus.append(
            {
                "index": gpu.index,
                "cuda_ordinal": gpu.cuda_ordinal,
                "name": gpu.name,
                "compute_capability": None
                if gpu.compute_capability is None
                else f"{gpu.compute_capability[0]}.{gpu.compute_capability[1]}",
                "total_memory_bytes": gpu.total_memory_bytes,
                "free_memory_bytes": gpu.free_memory_bytes,
                "mig_mode": gpu.mig_mode,
                "health": {"notes": notes, "degraded": degraded},
                "unknown": dict(gpu.unknown),
            }
        )
    packages = {"pytest-gpuinfer": _version("pytest-gpuinfer")}
    packages.update({name: software.packages.get(name) for name in PACKAGES})
    return {
        **ENV.stamp(),
        "platform": software.platform,
        "python": software.python,
        "packages": packages,
        "torch_cuda": software.torch_cuda,
        "torch_hip": software.torch_hip,
        "driver": nvml.driver.to_dict(),
        "gpus": gpus,
        "gpu_unavailable_reason": nvml.unavailable_reason,
        "warnings": list(nvml.warnings),
        "environment": {name: environ.get(name) for name in ENVIRONMENT_VARIABLES},
        "allocator": allocator_config(environ).to_dict(),
    }


def _version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def text(facts: Mapping[str, Any]) -> str:
    from pytest_gpuinfer.probes.alloc_conf import AllocatorConfig
    from pytest_gpuinfer.probes.memory_units import format_bytes

    packages = facts["packages"]

    def version(name: str) -> str:
        return packages.get(name) or "not installed"

    torch = version("torch")
    if packages.get("torch"):
        build = facts["torch_cuda"] and f"CUDA {facts['torch_cuda']}"
        build = build or (facts["torch_hip"] and f"ROCm {facts['torch_hip']}") or "CPU build"
        torch += f" ({build})"
    driver = facts["driver"]
    lines = [
        "Copy-and-paste the text below in your GitHub issue and FILL OUT the two last points.",
        "",
        f"- `pytest-gpuinfer` version: {version('pytest-gpuinfer')}",
        f"- Platform: {facts['platform']}",
        f"- Python version: {facts['python']}",
        f"- PyTorch version (GPU build): {torch}",
    ]
    lines += [f"- {name} version: {version(name)}" for name in PACKAGES if name != "torch"]
    if driver.get("driver_version"):
        lines.append(
            f"- NVIDIA driver: {driver['driver_version']} "
            f"(CUDA {driver.get('cuda_driver_version')}, NVML {driver.get('nvml_version')})"
        )
    else:
        lines.append(f"- NVIDIA driver: none read ({facts['gpu_unavailable_reason']})")
    if facts["gpus"]:
        for gpu in facts["gpus"]:
            memory = gpu["total_memory_bytes"]
            lines.append(
                f"- GPU {gpu['index']}: {gpu['name'] or 'unknown'}, cc "
                f"{gpu['compute_capability'] or 'unknown'}, "
                f"{format_bytes(memory) if memory else 'memory unknown'}"
                + (", MIG mode" if gpu["mig_mode"] else "")
            )
            lines += [f"  - degraded: {why}" for why in gpu["health"]["degraded"]]
            lines += [f"  - {note}" for note in gpu["health"]["notes"]]
    else:
        lines.append(f"- GPUs: none ({facts['gpu_unavailable_reason']})")
    lines += [f"- warning: {w}" for w in facts["warnings"]]
    for name, value in facts["environment"].items():
        lines.append(f"- {name}: {value if value is not None else 'unset'}")
    allocator = facts["allocator"]
    config = AllocatorConfig(
        allocator["variable"], allocator["raw"], allocator["settings"], allocator["values"]
    )
    lines.append(f"- Memory fit: fragmentation {config.fragmentation_source}")
    lines.extend(f"- {problem}" for problem in allocator["problems"])
    lines += [
        "- Using GPU in script?: <fill in>",
        "- Using distributed or parallel set-up in script?: <fill in>",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    facts = collect(os.environ)
    print(json.dumps(facts, indent=2) if args.json else text(facts))
    return 0

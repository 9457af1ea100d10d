"""This machine's platform, read without initialising CUDA: x86_64, aarch64 or tegra.

A Jetson (Tegra) is an aarch64 machine whose GPU is integrated; JetPack writes
``/etc/nv_tegra_release`` and its device tree names ``nvidia,tegra...``. An aarch64
machine without either is a server (GH200, GB200).
"""

from __future__ import annotations

import platform as _platform
from pathlib import Path

TEGRA_RELEASE = Path("/etc/nv_tegra_release")
DEVICE_TREE_COMPATIBLE = Path("/proc/device-tree/compatible")


def _is_tegra(root: Path) -> bool:
    if (root / TEGRA_RELEASE.relative_to("/")).exists():
        return True
    try:
        compatible = (root / DEVICE_TREE_COMPATIBLE.relative_to("/")).read_bytes()
    except OSError:
        return False
    return b"nvidia,tegra" in compatible.lower()


def machine_platform(machine: str | None = None, root: Path = Path("/")) -> str:
    """ "x86_64", "aarch64", "tegra", or the machine's own name for anything else.

    ``machine`` and ``root`` stand in for ``platform.machine()`` and ``/`` in tests.
    """
    name = (machine if machine is not None else _platform.machine()).lower()
    if name in ("x86_64", "amd64"):
        return "x86_64"
    if name in ("aarch64", "arm64"):
        return "tegra" if _is_tegra(root) else "aarch64"
    return name or "x86_64"

"""The facts a rule reads (GPU, versions, torch build), and the "unknown" raised when unreadable."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from packaging.version import InvalidVersion, Version

from pytest_gpuinfer.probes import builds, platforms
from pytest_gpuinfer.probes.architectures import (
    TENSOR_CORE_PRECISIONS,
    has_tensor_cores,
    tensor_core_precisions,
)
from pytest_gpuinfer.probes.report import DriverInfo, GPUInfo, SoftwareStack


class UnknownFact(Exception):
    """A fact a rule needs could not be read; the rule's outcome becomes "unknown"."""


@dataclass(frozen=True)
class Facts:
    """What one rule evaluation may read: one GPU (or none, for the CPU) and the stack."""

    software: SoftwareStack
    gpu: GPUInfo | None
    simulated: bool = False
    driver: DriverInfo | None = None
    platform: str = "x86_64"
    """ "x86_64", "aarch64" or "tegra" (probes.platform_info)."""

    @property
    def on_gpu(self) -> bool:
        return self.gpu is not None

    @property
    def cc(self) -> tuple[int, int]:
        if self.gpu is None:
            raise UnknownFact("there is no GPU")
        if self.gpu.compute_capability is None:
            why = self.gpu.unknown.get("compute_capability", "NVML did not report it")
            raise UnknownFact(f"compute capability of {self.gpu.label} is unknown ({why})")
        return self.gpu.compute_capability

    @property
    def gpu_label(self) -> str:
        return self.gpu.label if self.gpu else "the CPU (no GPU)"

    @property
    def tensor_cores(self) -> tuple[str, ...]:
        assert self.gpu is not None
        return tensor_core_precisions(self.cc, self.gpu.name)

    def has(self, package: str) -> bool:
        return self.software.packages.get(package) is not None

    def version(self, package: str) -> Version:
        raw = self.software.packages.get(package)
        if raw is None:
            raise UnknownFact(f"{package} is not installed")
        try:
            return Version(raw)
        except InvalidVersion:
            raise UnknownFact(f"{package} version {raw!r} cannot be parsed") from None

    def at_least(self, package: str, minimum: str) -> bool:
        return self.version(package) >= Version(minimum)

    def below(self, package: str, bound: str) -> bool:
        return self.has(package) and self.version(package).release < Version(bound).release

    def pkg(self, package: str) -> str:
        return f"{package} {self.software.packages.get(package) or 'not installed'}"

    @property
    def has_int8_tensor_cores(self) -> bool:
        """Turing or newer with tensor cores (GTX 16xx boards have none)."""
        return "int8" in self.tensor_cores

    @property
    def is_gtx16(self) -> bool:
        assert self.gpu is not None
        return (
            self.cc[0] == 7 and self.cc >= (7, 5) and not has_tensor_cores(self.cc, self.gpu.name)
        )

    @property
    def torch_cuda_text(self) -> str | None:
        """torch's CUDA build as text: the installed or profile one, else the assumed one."""
        if self.software.torch_cuda is not None:
            return self.software.torch_cuda
        if self.software.assumed_torch_build and self.on_gpu and self.has("torch"):
            build = self.torch_build
            return build.cuda if build is not None else None
        return None

    @property
    def torch_cuda(self) -> tuple[int, int] | None:
        """torch's CUDA build as (major, minor); None for a CPU build or no torch."""
        text = self.torch_cuda_text
        if text is None:
            return None
        major, _, minor = text.partition(".")
        try:
            return int(major), int(minor or 0)
        except ValueError:
            raise UnknownFact(f"torch CUDA version {text!r} unreadable") from None

    @property
    def torch_label(self) -> str:
        """ "torch 2.13.0+cu132 (assumed: ...)", naming how the build was chosen."""
        build = self.torch_build
        if build is None:
            return self.pkg("torch")
        note = {
            "installed": "installed",
            "official": "official build",
            "assumed": "assumed: the best official build for this GPU",
            "extrapolated": "newer than the build table; judged by its newest release",
            "pypi": f"the PyPI wheel for {self.platform}",
        }[build.how]
        return f"{build.label} ({note})"

    @cached_property
    def torch_build(self) -> builds.TorchBuild | None:
        """The torch build this GPU is judged against (None: no torch, or a CPU build)."""
        return resolve_torch_build(self)

    @property
    def torch_is_cpu_build(self) -> bool:
        return (
            self.has("torch")
            and not self.software.assumed_torch_build
            and self.software.torch_cuda is None
            and self.software.torch_hip is None
            and "torch_cuda" not in self.software.unknown
        )


def resolve_torch_build(f: Facts) -> builds.TorchBuild | None:
    """Installed arch list, else the official build of the version and CUDA in play, else
    (a simulated GPU with no CUDA build named) the PyPI wheel of that version where it
    drives the GPU natively (``pip install torch==V``), else its best official build.

    On aarch64 the x86_64 build of the same CUDA version stands in for its targets (only
    x86_64 builds were read); a JetPack build on a Jetson is not an official build at all.
    """
    software = f.software
    version = software.packages.get("torch")
    if version is None or f.gpu is None:
        return None
    if software.torch_arch_list is not None:
        return builds.TorchBuild(
            version,
            software.torch_cuda,
            tuple(software.torch_arch_list),
            "installed",
            "torch.cuda.get_arch_list() of the installed build (read by --verify)",
        )
    if f.platform == "tegra" and platforms.is_jetpack_build(version):
        return None  # jetpack-torch-not-tabulated speaks for it
    cuda = software.torch_cuda
    if cuda is None and not software.assumed_torch_build:
        return None
    release, extrapolated = builds.torch_release(version)
    how: Literal["official", "assumed", "extrapolated", "pypi"] = "official" if cuda else "assumed"
    wheel = platforms.pypi_wheel(version, f.platform) if cuda is None else None
    if wheel is not None and f.platform != "x86_64":
        if wheel.cuda is None:
            stated = platforms.stated_builds(version, f.platform)
            if stated is None or not stated.cuda:
                return None  # a CPU-only wheel: aarch64-wheel-is-cuda-build speaks
            cuda = max(stated.cuda, key=lambda c: Version(c).release)
        else:
            cuda, how = wheel.cuda, "pypi"
    elif wheel is not None and wheel.cuda is not None and release is not None:
        targets = release.builds.get(wheel.cuda)
        if targets is not None and builds.coverage(targets, f.cc) == "sass":
            cuda, how = wheel.cuda, "pypi"
    if extrapolated:
        how = "extrapolated"
    if release is None or not builds.is_official_torch_version(version):
        return builds.TorchBuild(version, cuda, None, how, "no row in probes/builds.py")
    if cuda is None:
        best = builds.best_official_build(release, f.cc, prefer=lambda c: _bnb_has_library(f, c))
        if best is None:
            return builds.TorchBuild(version, None, (), how, release.source)
        cuda = best[0]
    source = release.source if wheel is None else f"{wheel.source}; {release.source}"
    return builds.TorchBuild(version, cuda, release.builds.get(cuda), how, source)


def _bnb_has_library(f: Facts, cuda: str) -> bool:
    """Whether the bitsandbytes in play loads a library with code for the GPU under CUDA
    ``cuda`` (True without a bitsandbytes, or one the binary table lacks)."""
    raw = f.software.packages.get("bitsandbytes")
    if raw is None:
        return True
    try:
        row = builds.bnb_release(Version(raw))
    except InvalidVersion:
        return True
    if row is None:
        return True
    lib = builds.bnb_library_for(row, cuda, f.cc)
    return lib is not None and builds.coverage(lib.targets, f.cc) is not None


def cc_text(cc: tuple[int, int]) -> str:
    return f"{cc[0]}.{cc[1]}"


INT8_TENSOR_CORES_FROM = cc_text(TENSOR_CORE_PRECISIONS["int8"])
"""The first compute capability with int8 tensor cores, as text ("7.5")."""

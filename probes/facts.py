"""The facts a rule reads (GPU, versions, torch build), and the "unknown" raised when unreadable."""

from __future__ import annotations

from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

from pytest_gpuinfer.probes.architectures import TENSOR_CORE_PRECISIONS, tensor_core_precisions
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
    def torch_cuda(self) -> tuple[int, int] | None:
        """torch's CUDA build; None when a simulated profile lets us assume a fitting one."""
        if self.software.torch_cuda is None:
            return None
        major, _, minor = self.software.torch_cuda.partition(".")
        try:
            return int(major), int(minor or 0)
        except ValueError:
            raise UnknownFact(
                f"torch CUDA version {self.software.torch_cuda!r} unreadable"
            ) from None

    @property
    def torch_is_cpu_build(self) -> bool:
        return (
            self.has("torch")
            and not self.software.assumed_torch_build
            and self.software.torch_cuda is None
            and self.software.torch_hip is None
            and "torch_cuda" not in self.software.unknown
        )


def cc_text(cc: tuple[int, int]) -> str:
    return f"{cc[0]}.{cc[1]}"


INT8_TENSOR_CORES_FROM = cc_text(TENSOR_CORE_PRECISIONS["int8"])
"""The first compute capability with int8 tensor cores, as text ("7.5")."""

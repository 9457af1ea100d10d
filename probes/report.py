"""The report: what the probes found and what the rules concluded, as plain data.

Every field that can fail to be read is optional and, when missing, its reason sits in
the owning object's ``unknown`` mapping (field name -> "why"). The whole report
round-trips through JSON (``to_dict`` / ``from_dict``) under a versioned schema.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pytest_gpuinfer.probes.modes import MODES as MODES  # re-exported: contracts.md

SCHEMA_VERSION = "1"


class Status(str, enum.Enum):
    SUPPORTED = "supported"
    DEGRADED = "degraded"
    UNSUPPORTED = "unsupported"
    UNKNOWN = "unknown"

    @property
    def rank(self) -> int:
        """Worse is higher; combining verdicts keeps the worst."""
        return _STATUS_RANK[self]


_STATUS_RANK = {
    Status.SUPPORTED: 0,
    Status.DEGRADED: 1,
    Status.UNKNOWN: 2,
    Status.UNSUPPORTED: 3,
}


@dataclass
class GPUInfo:
    """One GPU as the probe (NVML) or a simulated profile describes it."""

    index: int
    """NVML index (PCI bus order), or the position in a simulated profile."""
    cuda_ordinal: int | None = None
    """The ordinal a CUDA process started with the current environment would see."""
    name: str | None = None
    uuid: str | None = None
    pci_bus_id: str | None = None
    compute_capability: tuple[int, int] | None = None
    architecture: str | None = None
    total_memory_bytes: int | None = None
    free_memory_bytes: int | None = None
    used_memory_bytes: int | None = None
    memory_bandwidth_gb_per_s: float | None = None
    mig_mode: bool | None = None
    has_tensor_cores: bool | None = None
    """False for parts sold without them although their architecture has them (GTX 16xx)."""
    simulated: bool = False
    unknown: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        name = self.name or "unknown GPU"
        if self.compute_capability is None:
            return name
        major, minor = self.compute_capability
        return f"{name} ({major}.{minor})"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.compute_capability is not None:
            data["compute_capability"] = (
                f"{self.compute_capability[0]}.{self.compute_capability[1]}"
            )
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPUInfo:
        data = dict(data)
        capability = data.get("compute_capability")
        if isinstance(capability, str):
            major, _, minor = capability.partition(".")
            data["compute_capability"] = (int(major), int(minor or 0))
        elif isinstance(capability, list):
            data["compute_capability"] = (int(capability[0]), int(capability[1]))
        return cls(**data)


@dataclass
class DriverInfo:
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    """The highest CUDA version the driver supports, e.g. "13.0"."""
    nvml_version: str | None = None
    unknown: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriverInfo:
        return cls(**data)


@dataclass
class NativeCheck:
    """Whether bitsandbytes' native library really ran an int8 matmul."""

    state: str = "not-run"
    """"passed", "failed" or "not-run" (then the verdict is inferred from versions)."""
    detail: str = ""
    cached: bool = False
    device: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NativeCheck:
        return cls(**data)


@dataclass
class SoftwareStack:
    python: str
    platform: str
    packages: dict[str, str | None]
    """Distribution name -> installed version, None when not installed."""
    torch_cuda: str | None = None
    """CUDA version torch was built for; None for CPU or ROCm builds or no torch."""
    torch_hip: str | None = None
    bitsandbytes_native: NativeCheck = field(default_factory=NativeCheck)
    overridden: list[str] = field(default_factory=list)
    """Package names whose versions come from a simulated profile, not this machine."""
    assumed_torch_build: bool = False
    """True when a simulated profile made us assume a CUDA torch build that drives its GPU."""
    torch_arch_list: list[str] | None = None
    """``torch.cuda.get_arch_list()`` of the installed build, read in a child process by
    ``--verify`` (and reused from its cache); None when not read."""
    unknown: dict[str, str] = field(default_factory=dict)

    def version(self, package: str) -> str | None:
        return self.packages.get(package)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["bitsandbytes_native"] = self.bitsandbytes_native.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SoftwareStack:
        data = dict(data)
        data["bitsandbytes_native"] = NativeCheck.from_dict(data.get("bitsandbytes_native", {}))
        return cls(**data)


@dataclass
class Finding:
    """One rule's conclusion about one mode."""

    rule_id: str
    status: Status
    message: str
    source: str = ""
    """Where the rule's fact was read (a release file and line, a URL, a data file)."""
    confirmed: bool = True
    """False where the sources are silent or disagree (the message starts "unconfirmed: ")."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "status": self.status.value,
            "message": self.message,
            "source": self.source,
            "confirmed": self.confirmed,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        return cls(
            rule_id=data["rule_id"],
            status=Status(data["status"]),
            message=data["message"],
            source=str(data.get("source", "")),
            confirmed=bool(data.get("confirmed", True)),
        )


@dataclass
class Verdict:
    """Whether one mode runs here, why, and what it resolves to on this stack."""

    mode: str
    status: Status
    findings: list[Finding] = field(default_factory=list)
    resolves_to: str | None = None
    """e.g. "sdpa (flash, memory-efficient)", "BitsAndBytesConfig(load_in_8bit=True)"."""
    verified: bool = False
    """True when a real run (bitsandbytes' int8 matmul) backs the verdict, not only versions."""
    device: str = "cuda"
    """Where the verdict applies: "cuda" for the GPUs, "cpu" on a machine without one."""
    assumptions: list[str] = field(default_factory=list)
    """What the verdict takes for granted without a table row: an assumed torch build, a
    version no table covers, one platform's binaries standing in for another's."""
    sources: list[str] = field(default_factory=list)
    """The sources of the rules the verdict rests on: the deciding findings' for a "no",
    the rules that applied and held for a "supported"."""

    @property
    def ok(self) -> bool:
        return self.status in (Status.SUPPORTED, Status.DEGRADED)

    @property
    def reasons(self) -> list[str]:
        """Messages of the findings that decided the status (the worst ones first)."""
        ordered = sorted(self.findings, key=lambda f: -f.status.rank)
        return [f.message for f in ordered if f.status is not Status.SUPPORTED] or [
            f.message for f in ordered
        ]

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "status": self.status.value,
            "reason": self.reason,
            "findings": [f.to_dict() for f in self.findings],
            "resolves_to": self.resolves_to,
            "verified": self.verified,
            "device": self.device,
            "assumptions": list(self.assumptions),
            "sources": list(self.sources),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        return cls(
            mode=data["mode"],
            status=Status(data["status"]),
            findings=[Finding.from_dict(f) for f in data.get("findings", [])],
            resolves_to=data.get("resolves_to"),
            verified=bool(data.get("verified", False)),
            device=data.get("device", "cuda"),
            assumptions=[str(a) for a in data.get("assumptions", [])],
            sources=[str(s) for s in data.get("sources", [])],
        )


@dataclass
class Report:
    """Everything one probe found, and the verdict for every mode."""

    gpus: list[GPUInfo]
    driver: DriverInfo
    software: SoftwareStack
    verdicts: dict[str, Verdict]
    gpu_unavailable_reason: str | None = None
    """Why no GPU is listed (no NVML library, driver not loaded, no devices...)."""
    profile: str | None = None
    """Name of the simulated profile judged instead of this machine's hardware."""
    visible_devices: str | None = None
    """CUDA_VISIBLE_DEVICES as it was when probed (None when unset)."""
    memory_fit: dict[str, Any] | None = None
    """Memory estimate and fit for a model (see probes.memory_fit), when one was given."""
    probe_seconds: float | None = None
    warnings: list[str] = field(default_factory=list)
    """Things the probe noticed that a user should know (MIG slices, odd CUDA_VISIBLE_DEVICES)."""
    platform: str = "x86_64"
    """ "x86_64", "aarch64" (a server such as GH200) or "tegra" (Jetson): which official
    wheels exist for the machine (probes.platform_info reads it; a profile states it)."""
    schema_version: str = SCHEMA_VERSION

    @property
    def simulated(self) -> bool:
        return self.profile is not None

    def verdict(self, mode: str) -> Verdict:
        return self.verdicts[mode]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "profile": self.profile,
            "platform": self.platform,
            "gpus": [gpu.to_dict() for gpu in self.gpus],
            "gpu_unavailable_reason": self.gpu_unavailable_reason,
            "visible_devices": self.visible_devices,
            "driver": self.driver.to_dict(),
            "software": self.software.to_dict(),
            "verdicts": {mode: v.to_dict() for mode, v in self.verdicts.items()},
            "memory_fit": self.memory_fit,
            "probe_seconds": self.probe_seconds,
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"report schema_version {version!r} is not supported; expected {SCHEMA_VERSION!r}"
            )
        return cls(
            gpus=[GPUInfo.from_dict(g) for g in data["gpus"]],
            driver=DriverInfo.from_dict(data["driver"]),
            software=SoftwareStack.from_dict(data["software"]),
            verdicts={m: Verdict.from_dict(v) for m, v in data["verdicts"].items()},
            gpu_unavailable_reason=data.get("gpu_unavailable_reason"),
            profile=data.get("profile"),
            visible_devices=data.get("visible_devices"),
            memory_fit=data.get("memory_fit"),
            probe_seconds=data.get("probe_seconds"),
            warnings=list(data.get("warnings", [])),
            platform=str(data.get("platform", "x86_64")),
            schema_version=version,
        )


def parse_modes(value: str | Sequence[str], *, what: str = "mode") -> tuple[str, ...]:
    """ "int8,fastpath" or ["int8", "fastpath"] -> validated modes; InputError names a bad one.

    Case and spaces around a name are forgiven (``" INT8 "`` is ``int8``); an empty entry
    (``int8,,fp16``, a trailing comma) and a mode named twice are errors, since both are
    usually a typo for a mode that was meant.
    """
    from pytest_gpuinfer.probes.errors import InputError

    items = value.split(",") if isinstance(value, str) else list(value)
    expected = f"expected one or more of: {', '.join(MODES)}, separated by commas"
    if not any(str(item).strip() for item in items):
        raise InputError(f"no {what} given in {value!r}; {expected}")
    modes: list[str] = []
    for item in items:
        mode = str(item).strip().lower()
        if not mode:
            raise InputError(
                f"empty {what} in {value!r} (two commas in a row, or one at an end); {expected}"
            )
        if mode not in MODES:
            raise InputError(f"unknown {what} {item!r}; expected one of: {', '.join(MODES)}")
        if mode in modes:
            raise InputError(f"{what} {mode!r} is given twice in {value!r}; name each mode once")
        modes.append(mode)
    return tuple(modes)

"""``gpuinfer audit --model M --sweep``: which GPU should I use? Every profile, smallest fit first.

For every profile the registry has (``probes.profiles.BUILTIN_PROFILES``, whatever it
holds) and every ``--profile`` given: the verdict and memory fit of each mode, the longest
sequence and largest batch that fit, and the bandwidth-bound decode ceiling
(``probes.decode_ceiling``). A profile is judged with this machine's packages where it has
them and the profile's assumed stack where it lacks them (``probes.assumed_stack``), as
``gpuinfer route`` does. JSON: schema ``pytest-gpuinfer/sweep`` 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_gpuinfer.probes.alloc_conf import AllocatorConfig
    from pytest_gpuinfer.probes.memory_workload import Workload
    from pytest_gpuinfer.probes.profiles import Profile


@dataclass
class ModeRow:
    mode: str
    verdict: str
    fit: str
    runs: bool
    """The verdict allows the mode (supported/degraded) and the workload fits (same)."""
    max_seq_len: int | None
    max_batch_size: int | None
    decode: dict[str, Any] | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "verdict": self.verdict,
            "fit": self.fit,
            "runs": self.runs,
            "max_seq_len": self.max_seq_len,
            "max_batch_size": self.max_batch_size,
            "decode_ceiling": self.decode,
            "reason": self.reason,
        }


@dataclass
class ProfileRow:
    profile: str
    gpu_name: str
    gpu_count: int
    memory_bytes: int
    bandwidth_gb_per_s: float
    source: str
    modes: list[ModeRow] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return any(m.runs for m in self.modes)

    @property
    def first_running(self) -> ModeRow | None:
        return next((m for m in self.modes if m.runs), None)

    def sort_key(self) -> tuple[bool, int, float, str]:
        return (
            not self.fits,
            self.memory_bytes * self.gpu_count,
            -self.bandwidth_gb_per_s,
            self.profile,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "gpu_name": self.gpu_name,
            "gpu_count": self.gpu_count,
            "memory_bytes": self.memory_bytes,
            "memory_bandwidth_gb_per_s": self.bandwidth_gb_per_s,
            "source": self.source,
            "fits": self.fits,
            "modes": [m.to_dict() for m in self.modes],
        }


def profiles_to_sweep(extra: Sequence[object]) -> list[Profile]:
    """Every registered built-in profile, then the given ones (names, files or profiles)."""
    from pytest_gpuinfer.probes.profiles import BUILTIN_PROFILES, Profile, load_profile

    profiles = list(BUILTIN_PROFILES.values())
    names = {p.name for p in profiles}
    for spec in extra:
        profile = spec if isinstance(spec, Profile) else load_profile(str(spec))
        if profile.name not in names:
            profiles.append(profile)
            names.add(profile.name)
    return profiles


def sweep(
    model: str,
    profiles: Sequence[Profile],
    modes: Sequence[str],
    workload: Workload,
    allocator: AllocatorConfig,
) -> list[ProfileRow]:
    """One row per profile, sorted: those that run a mode first, smallest memory first."""
    from pytest_gpuinfer.probes.assumed_stack import with_assumed_stack
    from pytest_gpuinfer.probes.decode_ceiling import decode_ceiling
    from pytest_gpuinfer.probes.memory_fit import estimate_model_memory, fit_on_devices
    from pytest_gpuinfer.probes.probe import probe
    from pytest_gpuinfer.probes.report import Status
    from pytest_gpuinfer.probes.software import probe_software

    estimate = estimate_model_memory(model, modes=tuple(modes))
    installed = probe_software().packages
    ok = {Status.SUPPORTED, Status.DEGRADED}
    rows: list[ProfileRow] = []
    for profile in profiles:
        report = probe(profile=with_assumed_stack(profile, installed), modes=modes)
        fit = fit_on_devices(estimate, report.gpus, workload=workload, allocator=allocator)
        row = ProfileRow(
            profile.name,
            profile.gpu_name,
            profile.gpu_count,
            profile.memory_bytes,
            profile.memory_bandwidth_gb_per_s,
            profile.source,
        )
        for mode in modes:
            verdict = report.verdicts[mode]
            mode_fit = fit.fits[mode]
            best = mode_fit.best
            kv = mode_fit.workload.kv_cache_final if mode_fit.workload else None
            ceiling = decode_ceiling(
                profile.memory_bandwidth_gb_per_s,
                mode_fit.weights_bytes,
                kv,
                workload.batch_size,
            )
            row.modes.append(
                ModeRow(
                    mode=mode,
                    verdict=verdict.status.value,
                    fit=mode_fit.status.value,
                    runs=verdict.status in ok and mode_fit.status in ok,
                    max_seq_len=best.max_seq_len if best else None,
                    max_batch_size=best.max_batch_size if best else None,
                    decode=ceiling.to_dict(),
                    reason=verdict.reason if verdict.status not in ok else mode_fit.reason,
                )
            )
        rows.append(row)
    return sorted(rows, key=ProfileRow.sort_key)


def to_json(
    rows: Sequence[ProfileRow], model: str, workload: Workload, allocator: AllocatorConfig
) -> dict[str, Any]:
    from pytest_gpuinfer.probes.decode_ceiling import FORMULA
    from pytest_gpuinfer.schemas import SWEEP

    return {
        **SWEEP.stamp(),
        "model": model,
        "workload": workload.to_dict(),
        "allocator": allocator.to_dict(),
        "decode_ceiling_formula": FORMULA,
        "order": "profiles that run a mode first, then by total GPU memory, then bandwidth",
        "profiles": [r.to_dict() for r in rows],
    }


def text(rows: Sequence[ProfileRow], model: str, workload: Workload) -> str:
    from pytest_gpuinfer.probes.decode_ceiling import FORMULA
    from pytest_gpuinfer.probes.memory_units import format_bytes

    header = (
        f"{'profile':<17}{'GPU':<28}{'memory':>11}  {'runs and fits':<30}"
        f"{'first':<9}{'longest seq':>12}{'largest batch':>14}{'decode tok/s':>13}"
    )
    lines = [
        f"sweep: {model}, generate() on batch {workload.batch_size} x {workload.seq_len} "
        f"+ {workload.new_tokens} new tokens; smallest GPU that fits first",
        "",
        header,
        "-" * len(header),
    ]
    for row in rows:
        gpu = row.gpu_name if row.gpu_count == 1 else f"{row.gpu_count} x {row.gpu_name}"
        running = [m.mode for m in row.modes if m.runs]
        first = row.first_running
        ceiling = first.decode if first and first.decode else None
        tokens = "-" if ceiling is None else f"{ceiling['tokens_per_s']:,.0f}"
        lines.append(
            f"{row.profile:<16} {gpu[:27]:<28}{format_bytes(row.memory_bytes):>11}  "
            f"{(','.join(running) or 'none'):<30}{(first.mode if first else '-'):<9}"
            f"{_num(first.max_seq_len if first else None):>12}"
            f"{_num(first.max_batch_size if first else None):>14}"
            f"{tokens:>13}"
        )
    lines += [
        "",
        f"first: the first of --modes that runs and fits; decode tok/s: its ceiling, {FORMULA}",
        "(datasheet bandwidth; real decoding reaches a fraction of it). --json has every mode.",
    ]
    return "\n".join(lines)


def _num(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def exit_code(rows: Sequence[ProfileRow]) -> int:
    return 0 if any(r.fits for r in rows) else 1


def run(
    model: str,
    extra_profiles: Sequence[object],
    modes: Sequence[str],
    workload: Workload,
    environ: Mapping[str, str],
    *,
    as_json: bool,
) -> int:
    import json

    from pytest_gpuinfer.probes.alloc_conf import allocator_config

    allocator = allocator_config(environ)
    rows = sweep(model, profiles_to_sweep(extra_profiles), modes, workload, allocator)
    if as_json:
        print(json.dumps(to_json(rows, model, workload, allocator), indent=2))
    else:
        print(text(rows, model, workload))
    return exit_code(rows)

"""The benchmark's record: one mode at one workload, its figures, ratios and JSON form.

The JSON (``SCHEMA_VERSION``) keeps optimum-benchmark's report layout under ``report``:
``load_model``, ``prefill``, ``decode``, ``per_token`` and ``generate``, each with that
tool's ``latency`` / ``throughput`` / ``memory`` / ``energy`` / ``efficiency`` fields and
units (s, tokens/s, MB, kWh); docs/bench.md lists the mapping.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_gpuinfer.bench.measure import Footprint, Repetition, WorkloadRun, by_round
from pytest_gpuinfer.bench.stats import Latency, RatioInterval, Spread, bootstrap_ratio
from pytest_gpuinfer.probes.memory_workload import Workload

SCHEMA = "pytest-gpuinfer/bench"
SCHEMA_VERSION = "2"
"""2: interleaved rounds (``rounds`` per repetition), ``intervals``, ``resolution``,
``compile``; ``prompt_len`` keeps its name (the audit's Workload calls it seq_len)."""

INTERVAL_FIGURES: tuple[str, ...] = (
    "decode_seconds_per_token",
    "prefill_seconds",
    "end_to_end_seconds",
)
"""Timed once per repetition, hence per round: the ratios that carry an interval."""

JOULES_PER_KWH = 3.6e6
MB = 1e6

FIGURES: tuple[str, ...] = (
    "load_seconds",
    "weights_bytes",
    "peak_allocated_bytes",
    "peak_reserved_bytes",
    "peak_process_bytes",
    "prefill_seconds",
    "decode_seconds_per_token",
    "decode_tokens_per_second",
    "end_to_end_seconds",
    "energy_joules_per_token",
    "floor_seconds_per_token",
    "mbu",
)
"""Every figure a record carries, and of which it holds a ratio to the reference."""


@dataclass
class LoadFigures:
    """What the load cost: seconds, the weights' bytes, what transformers applied."""

    seconds: float
    weights_bytes: int
    applied: str
    allocated_after_load_bytes: int | None = None


@dataclass
class ModeResult:
    """One mode at one workload. Figures are medians over repetitions; None where this
    machine cannot measure it (see ``notes``). ``ratios`` divide by the reference's."""

    mode: str
    workload: Workload
    status: str
    """measured | oom | failed | interrupted | not-runnable."""
    reason: str | None = None
    reference: bool = False
    applied: str | None = None
    device: str | None = None
    process_id: int | None = None
    load_seconds: float | None = None
    weights_bytes: int | None = None
    peak_allocated_bytes: int | None = None
    peak_reserved_bytes: int | None = None
    peak_process_bytes: int | None = None
    peak_device_bytes: int | None = None
    peak_ram_bytes: int | None = None
    prefill_seconds: float | None = None
    decode_seconds_per_token: float | None = None
    decode_tokens_per_second: float | None = None
    end_to_end_seconds: float | None = None
    energy_joules_per_token: float | None = None
    floor_seconds_per_token: float | None = None
    mbu: float | None = None
    spread: Spread | None = None
    spread_too_wide: bool = False
    repetitions: int = 0
    seconds_measured: float = 0.0
    ratios: dict[str, float | None] = field(default_factory=dict)
    intervals: dict[str, RatioInterval] = field(default_factory=dict)
    """Bootstrap intervals of the ratios in INTERVAL_FIGURES, over paired rounds."""
    resolution: dict[str, Any] | None = None
    """What the mode resolved to (attention, dtype, quantizer, linear classes)."""
    notes: list[str] = field(default_factory=list)
    time_split: dict[str, Any] | None = None
    run: WorkloadRun | None = None

    @property
    def ok(self) -> bool:
        return self.status == "measured"

    @property
    def label(self) -> str:
        return f"{self.mode} b{self.workload.batch_size}"

    def figure(self, name: str) -> float | None:
        if name not in FIGURES:
            raise KeyError(f"unknown figure {name!r}; expected one of {', '.join(FIGURES)}")
        value = getattr(self, name)
        return None if value is None else float(value)

    def ratio(self, name: str) -> float | None:
        """This figure / the reference mode's (None when either is missing)."""
        self.figure(name)
        return self.ratios.get(name)

    def compare_to(self, reference: ModeResult) -> None:
        """Fill ``ratios`` against ``reference`` (measured at the same workload), and the
        intervals of the timed ratios over the rounds both measured."""
        for name in FIGURES:
            mine, theirs = self.figure(name), reference.figure(name)
            self.ratios[name] = mine / theirs if mine is not None and theirs else None
        if self is reference:
            return
        mine_rounds, theirs_rounds = self.per_round(), reference.per_round()
        common = sorted(set(mine_rounds) & set(theirs_rounds))
        for name in INTERVAL_FIGURES:
            interval = bootstrap_ratio(
                [mine_rounds[r][name] for r in common], [theirs_rounds[r][name] for r in common]
            )
            if interval is not None:
                self.intervals[name] = interval

    def per_round(self) -> dict[int, dict[str, float]]:
        """Round -> the median of each timed figure over that round's repetitions."""
        import statistics as stats

        if self.run is None:
            return {}
        steps = self.workload.new_tokens - 1
        return {
            r: {
                "decode_seconds_per_token": stats.median(x.decode_s / steps for x in reps),
                "prefill_seconds": stats.median(x.prefill_s for x in reps),
                "end_to_end_seconds": stats.median(x.generate_s for x in reps),
            }
            for r, reps in by_round(self.run.repetitions).items()
        }

    def interval(self, name: str) -> RatioInterval | None:
        """The ratio's bootstrap interval (None for the reference or with < 2 rounds)."""
        return self.intervals.get(name)

    def figures(self) -> dict[str, float | None]:
        return {name: self.figure(name) for name in FIGURES}

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "batch_size": self.workload.batch_size,
            "prompt_len": self.workload.seq_len,
            "new_tokens": self.workload.new_tokens,
            "status": self.status,
            "reason": self.reason,
            "reference": self.reference,
            "applied": self.applied,
            "device": self.device,
            "process_id": self.process_id,
            "figures": self.figures(),
            "ratios": dict(self.ratios),
            "intervals": {k: v.to_dict() for k, v in self.intervals.items()},
            "resolution": self.resolution,
            "compile": self._compile(),
            "spread": None if self.spread is None else self.spread.to_dict(),
            "spread_too_wide": self.spread_too_wide,
            "repetitions": self.repetitions,
            "seconds_measured": self.seconds_measured,
            "peak_device_bytes": self.peak_device_bytes,
            "peak_ram_bytes": self.peak_ram_bytes,
            "time_split": self.time_split,
            "notes": list(self.notes),
            "report": self.optimum_report(),
        }

    def _compile(self) -> dict[str, Any] | None:
        run = self.run
        if run is None or run.compiled is None:
            return None
        typical = self.end_to_end_seconds or 0.0
        first = run.first_call_seconds
        return {
            **run.compiled,
            "first_call_seconds": first,
            "compile_seconds": None if first is None else max(first - typical, 0.0),
        }

    def optimum_report(self) -> dict[str, Any]:
        """optimum-benchmark's BenchmarkReport layout for this record."""
        run = self.run
        reps = run.repetitions if run is not None else []
        w = self.workload
        memory = _memory(self)
        load: dict[str, Any] = {
            "latency": None
            if self.load_seconds is None
            else Latency.from_values([self.load_seconds]).to_dict(),
            "memory": {"unit": "MB", "max_allocated": _mb(self.weights_bytes)},
            "energy": None,
        }
        if not reps:
            empty = {"latency": None, "throughput": None, "memory": memory, "energy": None}
            return {
                "load_model": load,
                "prefill": dict(empty, efficiency=None),
                "decode": dict(empty, efficiency=None),
                "per_token": {"latency": None, "throughput": None},
                "generate": dict(empty, efficiency=None),
            }
        prefill = Latency.from_values([r.prefill_s for r in reps])
        decode = Latency.from_values([r.decode_s for r in reps])
        generate = Latency.from_values([r.generate_s for r in reps])
        per_token = Latency.from_values([s for r in reps for s in r.per_token_s])
        prefill_tokens = w.batch_size * w.seq_len
        decode_tokens = w.batch_size * (w.new_tokens - 1)
        generate_tokens = w.batch_size * w.new_tokens
        energy = _energy_split(run, prefill.total, decode.total)
        return {
            "load_model": load,
            "prefill": _phase(prefill, prefill_tokens, memory, energy[0], len(reps)),
            "decode": _phase(decode, decode_tokens, memory, energy[1], len(reps)),
            "per_token": {"latency": per_token.to_dict(), "throughput": None},
            "generate": _phase(generate, generate_tokens, memory, energy[2], len(reps)),
        }


def _mb(value: int | None) -> float | None:
    return None if value is None else value / MB


def _memory(result: ModeResult) -> dict[str, Any]:
    return {
        "unit": "MB",
        "max_ram": _mb(result.peak_ram_bytes),
        "max_global_vram": _mb(result.peak_device_bytes),
        "max_process_vram": _mb(result.peak_process_bytes),
        "max_reserved": _mb(result.peak_reserved_bytes),
        "max_allocated": _mb(result.peak_allocated_bytes),
    }


def _phase(
    latency: Latency, tokens: int, memory: dict[str, Any], kwh: float | None, reps: int
) -> dict[str, Any]:
    throughput = tokens / latency.mean if latency.mean > 0 else 0.0
    energy = (
        None if kwh is None else {"unit": "kWh", "cpu": None, "ram": None, "gpu": kwh, "total": kwh}
    )
    efficiency = None
    if kwh:
        efficiency = {"unit": "tokens/kWh", "value": tokens * reps / kwh}
    return {
        "latency": latency.to_dict(),
        "throughput": {"unit": "tokens/s", "value": throughput},
        "memory": memory,
        "energy": energy,
        "efficiency": efficiency,
    }


def _energy_split(
    run: WorkloadRun | None, prefill_s: float, decode_s: float
) -> tuple[float | None, float | None, float | None]:
    """The GPU energy of all timed repetitions in kWh, split between prefill and decode in
    proportion to their time (the counter is cumulative; power is taken as constant)."""
    if run is None or run.energy_mj is None:
        return None, None, None
    total = run.energy_mj / 1000 / JOULES_PER_KWH
    spent = prefill_s + decode_s
    if spent <= 0:
        return None, None, total
    return total * prefill_s / spent, total * decode_s / spent, total


def first_in_round_ratio(repetitions: Sequence[Repetition]) -> float | None:
    """median decode of each round's first repetition / median of the round's later ones
    (None unless some round has two or more). Repetitions arrive in the order run."""
    rounds = [reps for reps in by_round(repetitions).values() if len(reps) > 1]
    first = [reps[0].decode_s for reps in rounds]
    later = [rep.decode_s for reps in rounds for rep in reps[1:]]
    if not first or not later or not statistics.median(later):
        return None
    return statistics.median(first) / statistics.median(later)


def build_result(
    mode: str,
    run: WorkloadRun,
    load: LoadFigures | None,
    shape: Footprint | None,
    *,
    bandwidth_bytes_per_s: float | None,
    bandwidth_reason: str | None,
    max_spread: float,
    peak_process_bytes: int | None = None,
    peak_device_bytes: int | None = None,
    process_id: int | None = None,
) -> ModeResult:
    """Turn raw repetitions into a record: medians, spread, floor and MBU."""
    w = run.workload
    result = ModeResult(
        mode=mode,
        workload=w,
        status=run.status,
        reason=run.reason,
        device=run.device,
        process_id=process_id,
        run=run,
        repetitions=len(run.repetitions),
        seconds_measured=run.seconds,
        peak_allocated_bytes=run.max_allocated_bytes,
        peak_reserved_bytes=run.max_reserved_bytes,
        peak_ram_bytes=run.max_ram_bytes,
        peak_process_bytes=peak_process_bytes,
        peak_device_bytes=peak_device_bytes,
        time_split=run.time_split,
    )
    if load is not None:
        result.applied = load.applied
        result.load_seconds = load.seconds
        result.weights_bytes = load.weights_bytes
    if not run.device.startswith("cuda"):
        result.notes.append("torch tracks no peak memory on a CPU: peak RAM is the process's")
    reentry = first_in_round_ratio(run.repetitions)
    if reentry is not None and abs(reentry - 1) > max_spread:
        result.notes.append(
            f"{mode} b{w.batch_size}: the first repetition of each round decodes "
            f"{reentry:.2f}x the round's later ones (median): re-entering a mode after the "
            "others ran costs time; --round-warmup 1 keeps it out of the figures"
        )
    if run.compiled is not None:
        if run.compiled.get("decode_step_compiled"):
            result.notes.append(
                "--compiled: decode step compiled by transformers (static cache, CUDA graphs); "
                "its compile time is in the first warm-up call, not in the figures"
            )
        else:
            result.notes.append(f"--compiled: {run.compiled.get('reason')}")
    reps = run.repetitions
    if not reps:
        return result
    steps = w.new_tokens - 1
    per_token = [r.decode_s / steps for r in reps]
    result.spread = Spread.of(per_token)
    result.spread_too_wide = len(reps) > 1 and result.spread.too_wide(max_spread)
    result.decode_seconds_per_token = result.spread.median
    result.decode_tokens_per_second = w.batch_size / result.spread.median
    result.prefill_seconds = statistics.median(r.prefill_s for r in reps)
    result.end_to_end_seconds = statistics.median(r.generate_s for r in reps)
    if run.energy_mj is not None:
        result.energy_joules_per_token = (
            run.energy_mj / 1000 / (len(reps) * w.batch_size * w.new_tokens)
        )
    elif run.energy_reason:
        result.notes.append(f"energy: {run.energy_reason}")
    _floor(result, shape, bandwidth_bytes_per_s, bandwidth_reason)
    if result.time_split and result.time_split.get("available"):
        busy = float(result.time_split["gpu_kernel_seconds_per_step"])
        result.time_split["gpu_busy_share"] = busy / result.spread.median
        result.time_split["host_seconds_per_step"] = max(result.spread.median - busy, 0.0)
    return result


def _floor(
    result: ModeResult, shape: Footprint | None, bandwidth: float | None, why: str | None
) -> None:
    """Floor per decode step: every weight byte and the KV cache read once, at peak
    bandwidth (the cache at its mean length over the decode)."""
    if bandwidth is None:
        result.notes.append(f"no bandwidth floor: {why or 'peak memory bandwidth unknown'}")
        return
    if shape is None:
        return
    w = result.workload
    kv = shape.kv_bytes(w.batch_size, w.seq_len + w.new_tokens / 2)
    if kv is None:
        why = shape.shape_reason or "config lacks layers/heads"
        result.notes.append(f"KV cache size unknown ({why}): floor is weights only")
        kv = 0.0
    result.floor_seconds_per_token = (shape.weights_bytes + kv) / bandwidth
    if result.decode_seconds_per_token:
        result.mbu = result.floor_seconds_per_token / result.decode_seconds_per_token


def add_ratios(results: list[ModeResult], reference: str) -> None:
    """Ratios of every result to the reference mode's result at the same workload."""
    by_workload = {r.workload: r for r in results if r.mode == reference and r.ok}
    for result in results:
        result.reference = result.mode == reference
        ref = by_workload.get(result.workload)
        if ref is not None and result.status in ("measured", "oom", "interrupted"):
            result.compare_to(ref)

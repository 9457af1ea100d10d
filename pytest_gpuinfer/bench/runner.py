"""Run a benchmark: one spawned process per runnable mode, measured in interleaved rounds.

The parent never imports torch. It probes the machine and starts a process for the
reference mode and for every mode the audit judges runnable; all stay alive. For each
workload every mode warms up, then the parent asks them in turn for one round of
repetitions (A, B, C, A, B, C ...) until each has its count and its seconds, so drift
falls on every mode alike and each round pairs a mode's figure with the reference's.
Meanwhile it samples NVML for each child's memory and for processes that are not ours.
Ctrl-C ends the children, keeps what was measured, and returns the partial result.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pytest_gpuinfer.bench.config import BenchConfig, Repetitions, ordered_modes
from pytest_gpuinfer.bench.hardware import (
    GpuWatch,
    Reading,
    device_handle,
    memory_bandwidth,
    nvml_session,
)
from pytest_gpuinfer.bench.measure import Repetition, WorkloadRun
from pytest_gpuinfer.bench.pool import ChildGone, ModeProcess
from pytest_gpuinfer.bench.precision import PrecisionCheck, check_precision
from pytest_gpuinfer.bench.progress import Progress, format_eta
from pytest_gpuinfer.bench.record import (
    SCHEMA,
    SCHEMA_VERSION,
    LoadFigures,
    ModeResult,
    add_ratios,
    build_result,
)
from pytest_gpuinfer.probes.memory_workload import Workload
from pytest_gpuinfer.probes.report import Report


@dataclass
class BenchResult:
    """A whole run: every mode's records, the verdicts' reasons, and whether to trust it."""

    config: BenchConfig
    reference: str
    results: list[ModeResult] = field(default_factory=list)
    device: str = "cpu"
    stack: str = ""
    bandwidth: Reading = field(default_factory=lambda: Reading(None))
    foreign_processes: list[dict[str, Any]] = field(default_factory=list)
    watch_note: str | None = None
    interrupted: bool = False
    started_at: str = ""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    rounds: dict[int, int] = field(default_factory=dict)
    """Workload index -> interleaved rounds measured."""
    precision: dict[int, PrecisionCheck] = field(default_factory=dict)
    """Workload index -> the last ``--precision`` check (only with a precision asked)."""

    @property
    def trusted(self) -> bool:
        """No other process used the GPU while we measured."""
        return not self.foreign_processes

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "run": {
                "model": self.config.model,
                "modes": list(self.config.modes),
                "reference_mode": self.reference,
                "batch_sizes": list(self.config.batch_sizes),
                "prompt_len": self.config.prompt_len,
                "new_tokens": self.config.new_tokens,
                "warmup_runs": self.config.repetitions.warmup,
                "min_repetitions": self.config.repetitions.min_count,
                "min_seconds": self.config.repetitions.min_seconds,
                "repetitions_per_round": self.config.repetitions.per_round,
                "round_warmup": self.config.repetitions.round_warmup,
                "max_spread": self.config.repetitions.max_spread,
                "pinned": self.config.pin_cpu,
                "compiled": self.config.compiled,
                "interleaved": True,
                "rounds": [self.rounds.get(i, 0) for i in range(len(self.config.batch_sizes))],
                "precision": self.config.repetitions.precision,
                "max_seconds": self.config.repetitions.max_seconds,
                "precision_checks": [
                    c.to_dict() if (c := self.precision.get(i)) else None
                    for i in range(len(self.config.batch_sizes))
                ],
                "notes": list(self.notes),
                "device": self.device,
                "stack": self.stack,
                "memory_bandwidth_bytes_per_s": self.bandwidth.value,
                "memory_bandwidth_source": self.bandwidth.source or self.bandwidth.reason,
                "trusted": self.trusted,
                "foreign_processes": self.foreign_processes,
                "watch_note": self.watch_note,
                "interrupted": self.interrupted,
                "started_at": self.started_at,
                "seconds": self.seconds,
            },
            "results": [r.to_dict() for r in self.results],
        }


def reference_mode(report: Report, requested: str | None) -> str:
    """fp16 on a GPU, fp32 on a CPU, unless the caller names one."""
    if requested is not None:
        return requested
    return "fp16" if report.gpus else "fp32"


def _profile_bandwidth(report: Report) -> float | None:
    if not report.gpus:
        return None
    gpu = report.gpus[0]
    if gpu.memory_bandwidth_gb_per_s:
        return gpu.memory_bandwidth_gb_per_s
    from pytest_gpuinfer.probes.profiles import BUILTIN_PROFILES

    for profile in BUILTIN_PROFILES.values():
        if gpu.name and profile.gpu_name == gpu.name:
            return profile.memory_bandwidth_gb_per_s
    return None


def run_bench(
    config: BenchConfig, *, report: Report | None = None, progress: Progress | None = None
) -> BenchResult:
    """Measure every requested mode; KeyboardInterrupt returns a partial, interrupted result."""
    from pytest_gpuinfer.probes.render import stack_line

    if report is None:
        from pytest_gpuinfer.probes.probe import probe

        report = probe()
    progress = progress or Progress(enabled=False)
    reference = reference_mode(report, config.reference)
    modes = ordered_modes(config.modes, reference)
    gpu = report.gpus[0] if report.gpus else None
    result = BenchResult(
        config=config,
        reference=reference,
        device=gpu.label if gpu is not None else "cpu (no GPU)",
        stack=stack_line(report.software, report.driver.driver_version),
        started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    started = time.perf_counter()
    children: list[ModeProcess] = []
    with nvml_session() as (nvml, _why):
        handle = device_handle(nvml, gpu.index)[0] if nvml is not None and gpu else None
        result.bandwidth = memory_bandwidth(nvml, handle, _profile_bandwidth(report))
        watch = GpuWatch(nvml, handle)
        watch.start()
        payload = {
            "config": config.to_dict(),
            "report": report.to_dict(),
            "nvml_index": gpu.index if gpu is not None else None,
        }
        try:
            for position, mode in enumerate(modes, 1):
                tag = f"[{position}/{len(modes)}] {mode}"
                verdict = report.verdicts.get(mode)
                if verdict is None or not verdict.ok:
                    reason = verdict.reason if verdict is not None else "no verdict for this mode"
                    progress.phase(f"{tag}: not runnable here: {reason}")
                    for w in config.workloads():
                        result.results.append(
                            ModeResult(mode=mode, workload=w, status="not-runnable", reason=reason)
                        )
                    continue
                child = ModeProcess(mode, tag)
                children.append(child)
                progress.phase(f"{tag}: starting a fresh process")
                child.start(payload, watch)
                _await_load(child, watch, children, progress)
            result.notes += same_kernels([c for c in children if c.resolution is not None])
            for index, workload in enumerate(config.workloads()):
                _measure_workload(index, workload, config, children, watch, progress, result)
        except KeyboardInterrupt:
            result.interrupted = True
            for child in children:
                child.end()
            progress.phase("interrupted: child processes ended, partial results kept")
        finally:
            pids = _pids(children)
            for child in children:
                child.stop(watch, pids) if not result.interrupted else child.end()
        result.foreign_processes = [p.to_dict() for p in watch.foreign.values()]
        result.watch_note = watch.note
    for child in children:
        _collect(child, config, result, interrupted=result.interrupted)
    if result.interrupted:
        seen = {r.mode for r in result.results}
        for mode in modes:
            if mode not in seen:
                for w in config.workloads():
                    result.results.append(
                        ModeResult(
                            mode=mode,
                            workload=w,
                            status="interrupted",
                            reason="not measured: the run was interrupted (Ctrl-C)",
                        )
                    )
    order = {mode: i for i, mode in enumerate(modes)}
    result.results.sort(key=lambda r: (order.get(r.mode, len(order)), r.workload.batch_size))
    add_ratios(result.results, reference)
    result.seconds = time.perf_counter() - started
    progress.close()
    return result


def _pids(children: list[ModeProcess]) -> list[int]:
    return [c.pid for c in children if c.pid is not None]


def _await_load(
    child: ModeProcess, watch: GpuWatch, children: list[ModeProcess], progress: Progress
) -> None:
    """Follow the child until it has loaded its mode (or failed to)."""
    while True:
        try:
            message = child.receive(watch, _pids(children))
        except ChildGone as gone:
            child.failure = ("failed", str(gone))
            progress.phase(f"{child.tag}: failed: {gone}")
            return
        kind = message[0]
        if kind == "phase":
            progress.phase(f"{child.tag}: {message[1]}")
        elif kind == "load":
            child.load = LoadFigures(**message[1])
            child.footprint = message[2]
            child.device = message[3]
            child.resolution = message[4]
            progress.phase(
                f"{child.tag}: loaded in {child.load.seconds:.2f} s ({child.load.applied})"
            )
            return
        elif kind == "failed":
            child.failure = (message[1], message[2])
            progress.phase(f"{child.tag}: {message[1]}: {message[2]}")
            child.end()
            return


def same_kernels(children: list[ModeProcess]) -> list[str]:
    """A note for each group of modes that resolved to the same attention, dtype,
    quantizer and linear layers: the same kernels, so any difference is noise."""
    groups: dict[str, list[str]] = {}
    described: dict[str, str] = {}
    for child in children:
        assert child.resolution is not None
        r = child.resolution
        key = repr(sorted(r.items()))
        groups.setdefault(key, []).append(child.mode)
        described[key] = (
            f"attention {r.get('attention')}, {r.get('dtype')}, "
            f"{'quantizer ' + str(r['quantizer']) if r.get('quantizer') else 'no quantizer'}, "
            f"{'/'.join(r.get('linear_classes') or []) or 'no linear layers'}"
        )
    return [
        f"{' and '.join(modes)} resolve to the same kernels here ({described[key]}): "
        "expect them indistinguishable"
        for key, modes in groups.items()
        if len(modes) > 1
    ]


def _ask(
    child: ModeProcess, watch: GpuWatch, children: list[ModeProcess], *command: Any
) -> tuple[Any, ...] | None:
    """Send ``command``; the answer, or None when the child failed (recorded on it)."""
    try:
        child.send(*command)
        while True:
            message = child.receive(watch, _pids(children))
            if message[0] != "phase":
                break
    except ChildGone as gone:
        child.failure = ("failed", str(gone))
        return None
    if message[0] == "failed":
        child.failure = (message[1], message[2])
        child.end()
        return None
    return message


def _measure_workload(
    index: int,
    workload: Workload,
    config: BenchConfig,
    children: list[ModeProcess],
    watch: GpuWatch,
    progress: Progress,
    result: BenchResult,
) -> None:
    policy = config.repetitions
    label = f"b{workload.batch_size}"
    active: list[ModeProcess] = []
    for child in children:
        if not child.alive:
            continue
        progress.phase(f"{child.tag} {label}: warm-up")
        answer = _ask(child, watch, children, "warmup", index)
        if answer is None:
            continue
        if answer[0] == "oom":
            _oom(child, index, answer, progress)
            continue
        child.warm[index] = (answer[2], answer[3])
        if config.compiled and answer[3] is not None:
            state = "compiled" if answer[3].get("decode_step_compiled") else answer[3]["reason"]
            progress.phase(f"{child.tag} {label}: first call {answer[2]:.1f} s ({state})")
        active.append(child)
    rounds = 0
    round_seconds: list[float] = []
    started = time.perf_counter()
    while active:
        round_started = time.perf_counter()
        for child in list(active):
            answer = _ask(child, watch, children, "round", index, rounds, policy.per_round)
            if answer is None:
                active.remove(child)
                continue
            if answer[0] == "oom":
                _oom(child, index, answer, progress)
                active.remove(child)
                continue
            child.partial.setdefault(index, []).extend(Repetition(**r) for r in answer[2])
        rounds += 1
        result.rounds[index] = rounds
        round_seconds.append(time.perf_counter() - round_started)
        needed = _rounds_needed(active, index, policy, config.new_tokens)
        check = None
        if (
            policy.precision is not None
            and rounds >= needed
            and any(c.mode == result.reference for c in active)
        ):
            check = check_precision(
                {c.mode: c.partial.get(index, []) for c in active},
                result.reference,
                config.new_tokens,
                target=policy.precision,
                seconds=time.perf_counter() - started,
                rounds=rounds,
            )
            result.precision[index] = check
            needed = check.stop_at(policy.max_seconds)
        eta = _eta(round_seconds, rounds, needed, index, len(config.batch_sizes))
        text = f"{label} round {rounds}: " + ", ".join(
            f"{c.mode} {_last_ms(c, index, config.new_tokens)}" for c in active
        )
        if rounds == 1:
            progress.phase(
                f"{text} (repetition 1 of each; rounds until >= {policy.min_count} "
                f"repetitions and >= {policy.min_seconds:g} s per mode)",
                eta=eta,
            )
        else:
            if check is not None and check.widest_half_width is not None:
                text += f"; widest +-{check.widest_half_width:.1%} (target {check.target:.0%})"
            progress.tick(text, eta=eta)
        if rounds >= needed:
            break
    for child in active:
        answer = _ask(child, watch, children, "finish", index)
        if answer is None:
            continue
        if answer[0] == "oom":
            _oom(child, index, answer, progress)
            continue
        run = WorkloadRun.from_dict(answer[2])
        child.runs[index] = run
        progress.phase(
            f"{child.tag} {label}: {run.status}, {len(run.repetitions)} repetitions "
            f"in {run.seconds:.1f} s, decode {_median_ms(run.repetitions, config.new_tokens)}"
        )


def _oom(child: ModeProcess, index: int, answer: tuple[Any, ...], progress: Progress) -> None:
    child.runs[index] = WorkloadRun.from_dict(answer[3])
    progress.phase(f"{child.tag}: oom: {answer[2]}")


def _rounds_needed(
    active: list[ModeProcess], index: int, policy: Repetitions, new_tokens: int
) -> int:
    """Rounds until every active mode has its count and its seconds (generate() time)."""
    needed = math.ceil(policy.min_count / policy.per_round)
    for child in active:
        reps = child.partial.get(index, [])
        if not reps:
            continue
        mean = sum(r.generate_s for r in reps) / len(reps)
        if mean > 0:
            needed = max(needed, math.ceil(policy.min_seconds / mean / policy.per_round))
    return needed


def _eta(
    round_seconds: list[float], rounds: int, needed: int, index: int, workloads: int
) -> str | None:
    if not round_seconds:
        return None
    per_round = sum(round_seconds) / len(round_seconds)
    remaining = max(needed - rounds, 0) * per_round
    # Later workloads: as long as this one (a batch's cost is not known before it runs).
    remaining += (workloads - index - 1) * needed * per_round
    return format_eta(remaining)


def _last_ms(child: ModeProcess, index: int, new_tokens: int) -> str:
    reps = child.partial.get(index) or []
    if not reps:
        return "-"
    return f"{reps[-1].decode_s / (new_tokens - 1) * 1000:.2f} ms/token"


def _median_ms(reps: list[Repetition], new_tokens: int) -> str:
    per_token = sorted(r.decode_s / (new_tokens - 1) for r in reps)
    if not per_token:
        return "-"
    return f"{per_token[len(per_token) // 2] * 1000:.2f} ms/token"


def _collect(
    child: ModeProcess, config: BenchConfig, result: BenchResult, *, interrupted: bool
) -> None:
    for index, workload in enumerate(config.workloads()):
        run = child.runs.get(index)
        if run is None and index in child.partial:
            status = "interrupted" if interrupted else "failed"
            why = child.failure[1] if child.failure else "the child stopped"
            run = WorkloadRun(
                workload=workload,
                device=child.device,
                repetitions=child.partial[index],
                status=status,
                reason="interrupted (Ctrl-C) while measuring" if interrupted else why,
            )
        if run is None:
            status, reason = _missing(child, interrupted)
            record = ModeResult(mode=child.mode, workload=workload, status=status, reason=reason)
            if child.load is not None:
                record.applied = child.load.applied
                record.load_seconds = child.load.seconds
                record.weights_bytes = child.load.weights_bytes
            record.process_id = child.pid
            result.results.append(record)
            continue
        record = build_result(
            child.mode,
            run,
            child.load,
            child.footprint,
            bandwidth_bytes_per_s=result.bandwidth.value,
            bandwidth_reason=result.bandwidth.reason,
            max_spread=config.repetitions.max_spread,
            peak_process_bytes=child.peak_process,
            peak_device_bytes=child.peak_device,
            process_id=child.pid,
        )
        record.resolution = child.resolution
        result.results.append(record)


def _missing(child: ModeProcess, interrupted: bool) -> tuple[str, str]:
    if interrupted:
        return "interrupted", "interrupted (Ctrl-C) before this workload was measured"
    if child.failure is not None:
        return child.failure
    return "failed", "the child process ended before measuring this workload"

"""Run a benchmark: one spawned child per runnable mode, the GPU watched from outside.

The parent never imports torch. It probes the machine, measures the reference mode
first, then each mode the audit judges runnable in its own process, while it samples
NVML for the child's process memory and for processes that are not ours. Ctrl-C ends
the child, keeps what was measured, and returns the partial result.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pytest_gpuinfer.bench.config import BenchConfig, ordered_modes
from pytest_gpuinfer.bench.hardware import (
    GpuWatch,
    Reading,
    device_handle,
    memory_bandwidth,
    nvml_session,
)
from pytest_gpuinfer.bench.measure import ModelShape, Repetition, WorkloadRun
from pytest_gpuinfer.bench.progress import Progress
from pytest_gpuinfer.bench.record import (
    SCHEMA,
    SCHEMA_VERSION,
    LoadFigures,
    ModeResult,
    add_ratios,
    build_result,
)
from pytest_gpuinfer.probes.report import Report

POLL_SECONDS = 0.05


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
                "max_spread": self.config.repetitions.max_spread,
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
                _run_child(mode, tag, config, payload, watch, result, progress)
        except KeyboardInterrupt:
            result.interrupted = True
            progress.phase("interrupted: child process ended, partial results kept")
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
        result.foreign_processes = [p.to_dict() for p in watch.foreign.values()]
        result.watch_note = watch.note
    add_ratios(result.results, reference)
    result.seconds = time.perf_counter() - started
    progress.close()
    return result


@dataclass
class _ChildState:
    load: LoadFigures | None = None
    shape: ModelShape | None = None
    runs: dict[int, WorkloadRun] = field(default_factory=dict)
    partial: dict[int, list[Repetition]] = field(default_factory=dict)
    device: str = "cpu"
    failure: tuple[str, str] | None = None
    done: bool = False
    peak_process: int | None = None
    peak_device: int | None = None


def _run_child(
    mode: str,
    tag: str,
    config: BenchConfig,
    payload: dict[str, Any],
    watch: GpuWatch,
    result: BenchResult,
    progress: Progress,
) -> None:
    from pytest_gpuinfer.bench import worker

    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=worker.main, args=(sender, {**payload, "mode": mode}), name=f"gpuinfer-bench-{mode}"
    )
    state = _ChildState()
    progress.phase(f"{tag}: starting a fresh process")
    process.start()
    sender.close()
    watch.own_pids.add(os.getpid())
    try:
        _follow(process, receiver, state, watch, tag, config, progress)
    except KeyboardInterrupt:
        _end(process)
        _collect(mode, config, state, result, process.pid, interrupted=True)
        raise
    finally:
        receiver.close()
    process.join(timeout=30)
    if process.is_alive():
        _end(process)
    if state.failure is None and not state.done:
        code = process.exitcode
        detail = f"exit code {code}" + (" (killed: out of host memory?)" if code == -9 else "")
        state.failure = ("failed", f"the child process died ({detail})")
    _collect(mode, config, state, result, process.pid, interrupted=False)


def _follow(
    process: Any,
    receiver: Any,
    state: _ChildState,
    watch: GpuWatch,
    tag: str,
    config: BenchConfig,
    progress: Progress,
) -> None:
    while True:
        used, device = watch.sample([process.pid] if process.pid else [])
        if used is not None:
            state.peak_process = max(state.peak_process or 0, used)
        if device is not None:
            state.peak_device = max(state.peak_device or 0, device)
        if not receiver.poll(POLL_SECONDS):
            if not process.is_alive() and not receiver.poll(0):
                return
            continue
        try:
            message = receiver.recv()
        except EOFError:
            return
        kind = message[0]
        if kind == "phase":
            progress.phase(f"{tag}: {message[1]}")
        elif kind == "load":
            state.load = LoadFigures(**message[1])
            state.shape = ModelShape(**message[2])
            state.device = message[3]
            progress.phase(f"{tag}: loaded in {state.load.seconds:.2f} s ({state.load.applied})")
        elif kind == "rep":
            _, index, rep, count, elapsed = message
            state.partial.setdefault(index, []).append(Repetition(**rep))
            steps = config.new_tokens - 1
            text = (
                f"{tag} b{config.batch_sizes[index]}: repetition {count}, {elapsed:.1f} s, "
                f"decode {rep['decode_s'] / steps * 1000:.2f} ms/token"
            )
            if count == 1:
                policy = config.repetitions
                progress.phase(
                    f"{text} (repeating until >= {policy.min_count} and >= "
                    f"{policy.min_seconds:g} s)"
                )
            else:
                progress.tick(text)
        elif kind == "workload":
            run = WorkloadRun.from_dict(message[2])
            state.runs[message[1]] = run
            per_token = [r.decode_s / (config.new_tokens - 1) for r in run.repetitions]
            median = sorted(per_token)[len(per_token) // 2] * 1000 if per_token else float("nan")
            progress.phase(
                f"{tag} b{run.workload.batch_size}: {run.status}, {len(run.repetitions)} "
                f"repetitions in {run.seconds:.1f} s, decode {median:.2f} ms/token"
            )
        elif kind == "failed":
            state.failure = (message[1], message[2])
            progress.phase(f"{tag}: {message[1]}: {message[2]}")
        elif kind == "done":
            state.done = True


def _end(process: Any) -> None:
    """Terminate the child, then kill it if it does not go."""
    with contextlib.suppress(Exception):
        process.terminate()
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join(timeout=5)


def _collect(
    mode: str,
    config: BenchConfig,
    state: _ChildState,
    result: BenchResult,
    pid: int | None,
    *,
    interrupted: bool,
) -> None:
    for index, workload in enumerate(config.workloads()):
        run = state.runs.get(index)
        if run is None and index in state.partial:
            run = WorkloadRun(
                workload=workload,
                device=state.device,
                repetitions=state.partial[index],
                status="interrupted" if interrupted else "failed",
                reason="interrupted (Ctrl-C) while measuring"
                if interrupted
                else (state.failure[1] if state.failure else "the child stopped"),
            )
        if run is None:
            status, reason = _missing(state, interrupted)
            record = ModeResult(mode=mode, workload=workload, status=status, reason=reason)
            if state.load is not None:
                record.applied = state.load.applied
                record.load_seconds = state.load.seconds
                record.weights_bytes = state.load.weights_bytes
            record.process_id = pid
            result.results.append(record)
            continue
        result.results.append(
            build_result(
                mode,
                run,
                state.load,
                state.shape,
                bandwidth_bytes_per_s=result.bandwidth.value,
                bandwidth_reason=result.bandwidth.reason,
                max_spread=config.repetitions.max_spread,
                peak_process_bytes=state.peak_process,
                peak_device_bytes=state.peak_device,
                process_id=pid,
            )
        )


def _missing(state: _ChildState, interrupted: bool) -> tuple[str, str]:
    if interrupted:
        return "interrupted", "interrupted (Ctrl-C) before this workload was measured"
    if state.failure is not None:
        return state.failure
    return "failed", "the child process ended before measuring this workload"

"""The ``gpuinfer_bench`` fixture: measure a loaded model as ``gpuinfer bench`` does.

It runs in the test's process (the model is already loaded there), with the same
warm-up, repetition policy, per-token clock and record as the CLI's children, and hands
every figure to a sink: ``pytest_gpuinfer.plugin.fixtures.gpuinfer_bench`` (the fixture
the plugin registers) sends them to JUnit XML and to pytest-benchmark's ``extra_info``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from pytest_gpuinfer.bench.record import FIGURES, ModeResult

if TYPE_CHECKING:
    from pytest_gpuinfer.loading import LoadedModel
    from pytest_gpuinfer.probes.report import Report


def stamp(result: ModeResult, sink: Callable[[str, object], None]) -> None:
    """Hand every figure (and ratio to the reference) to ``sink(name, value)``."""
    prefix = f"gpuinfer_bench.{result.mode}.b{result.workload.batch_size}"
    sink(f"{prefix}.status", result.status)
    for name in FIGURES:
        value = result.figure(name)
        if value is not None:
            sink(f"{prefix}.{name}", value)
        ratio = result.ratios.get(name)
        if ratio is not None:
            sink(f"{prefix}.{name}_ratio", ratio)


def measure_loaded(
    loaded: LoadedModel,
    report: Report | None,
    *,
    workload: Any,
    policy: Any,
    time_split: bool = False,
) -> ModeResult:
    """Measure ``loaded`` in this process; the record ``gpuinfer bench`` would give."""
    from pytest_gpuinfer.bench.hardware import (
        device_handle,
        energy_millijoules,
        gpu_processes,
        memory_bandwidth,
        nvml_session,
    )
    from pytest_gpuinfer.bench.measure import footprint, run_workload
    from pytest_gpuinfer.bench.record import LoadFigures, build_result
    from pytest_gpuinfer.bench.runner import _profile_bandwidth

    on_gpu = str(loaded.model.device).startswith("cuda")
    gpu = report.gpus[0] if report is not None and report.gpus else None
    with nvml_session() as (nvml, _why):
        handle = device_handle(nvml, gpu.index)[0] if nvml is not None and gpu and on_gpu else None
        bandwidth = memory_bandwidth(
            nvml, handle, _profile_bandwidth(report) if report and on_gpu else None
        )
        energy = (lambda: energy_millijoules(nvml, handle)) if handle is not None else None
        run = run_workload(
            loaded.model, loaded.mode, workload, policy, energy=energy, time_split=time_split
        )
        process = None
        if nvml is not None and handle is not None:
            process = gpu_processes(nvml, handle).get(os.getpid())
    load = LoadFigures(loaded.load_seconds, loaded.footprint_bytes, loaded.applied)
    result = build_result(
        loaded.mode,
        run,
        load,
        footprint(loaded.model, loaded.footprint_bytes),
        bandwidth_bytes_per_s=bandwidth.value,
        bandwidth_reason=bandwidth.reason,
        max_spread=policy.max_spread,
        peak_process_bytes=process,
        process_id=os.getpid(),
    )
    if process is not None:
        result.notes.append("NVML process memory sampled once, after the run (in-process)")
    return result


def bench_loaded(
    loaded: LoadedModel,
    *,
    report: Report | None,
    sink: Callable[[str, object], None],
    batch_size: int = 1,
    prompt_len: int = 32,
    new_tokens: int = 16,
    warmup: int = 1,
    min_repetitions: int = 5,
    min_seconds: float = 1.0,
    max_spread: float = 0.05,
    reference: ModeResult | None = None,
    check: bool = True,
) -> ModeResult:
    """What the ``gpuinfer_bench`` fixture's callable does (``report`` and ``sink`` bound)."""
    __tracebackhide__ = True
    from pytest_gpuinfer.bench.config import Repetitions, bench_workload
    from pytest_gpuinfer.probes.errors import InputError

    try:
        workload = bench_workload(batch_size, prompt_len, new_tokens)
        policy = Repetitions(warmup, min_repetitions, min_seconds, max_spread)
    except InputError as error:
        pytest.fail(f"gpuinfer_bench: {error}", pytrace=False)
    if reference is not None and reference.workload != workload:
        pytest.fail(
            f"gpuinfer_bench: reference {reference.label} ran another workload "
            f"({reference.workload}); measure both with the same one",
            pytrace=False,
        )
    result = measure_loaded(loaded, report, workload=workload, policy=policy)
    if reference is not None and reference.ok:
        result.compare_to(reference)
    stamp(result, sink)
    if check and not result.ok:
        pytest.fail(
            f"gpuinfer_bench: {result.label}: {result.status}: {result.reason}", pytrace=False
        )
    return result


BENCH_KEYWORDS = (
    "batch_size",
    "prompt_len",
    "new_tokens",
    "warmup",
    "min_repetitions",
    "min_seconds",
    "max_spread",
    "reference",
    "check",
)
"""What ``gpuinfer_bench(loaded, ...)`` takes after the loaded model."""


def bench_call(
    args: tuple[Any, ...],
    options: dict[str, Any],
    *,
    report: Report | None,
    sink: Callable[[str, object], None],
) -> ModeResult:
    """The fixture's callable: its arguments checked, one failure line naming a bad one."""
    __tracebackhide__ = True
    if len(args) != 1:
        _refuse(
            f"takes the loaded model and keywords ({', '.join(BENCH_KEYWORDS)}); "
            f"got {len(args)} positional arguments"
        )
    loaded = args[0]
    unknown = [name for name in options if name not in BENCH_KEYWORDS]
    if unknown:
        _refuse(
            f"unknown keyword {unknown[0]}={options[unknown[0]]!r}; expected one of "
            f"{', '.join(BENCH_KEYWORDS)}"
        )
    if not all(hasattr(loaded, name) for name in ("model", "mode", "load_seconds", "applied")):
        _refuse(f"{_shown(loaded)} is not a loaded model: pass what load_model(...) returned")
    reference = options.get("reference")
    if reference is not None and not isinstance(reference, ModeResult):
        _refuse(
            f"reference={_shown(reference)} is not a result: pass what an earlier "
            "gpuinfer_bench(...) call returned (measured at the same workload)"
        )
    check = options.get("check", True)
    if not isinstance(check, bool):
        _refuse(f"check={check!r} is not understood: expected True or False")
    warn_past_positions(loaded, options)
    return bench_loaded(loaded, report=report, sink=sink, **options)


def warn_past_positions(loaded: Any, options: dict[str, Any]) -> None:
    """The audit's warning when prompt plus new tokens pass the model's positions."""
    import warnings

    from pytest_gpuinfer.probes.memory_workload import positions_note
    from pytest_gpuinfer.probes.model_shape import declared_positions

    prompt, new = options.get("prompt_len", 32), options.get("new_tokens", 16)
    to_dict = getattr(getattr(loaded.model, "config", None), "to_dict", None)
    if not (callable(to_dict) and isinstance(prompt, int) and isinstance(new, int)):
        return
    note = positions_note(declared_positions(to_dict()), prompt, new)
    if note is not None:
        warnings.warn(f"gpuinfer_bench: {note}", UserWarning, stacklevel=3)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"a {type(value).__name__}"


def _refuse(message: str) -> NoReturn:
    __tracebackhide__ = True
    pytest.fail(f"gpuinfer_bench: {message}", pytrace=False)

"""The child process that measures one mode: load it, run every workload, report back.

Started with multiprocessing's *spawn* context, so each mode gets a fresh interpreter,
a fresh CUDA context and its own allocator: no mode inherits another's cache or
fragmentation. Messages go to the parent over a pipe as plain tuples.
"""

from __future__ import annotations

import os
import signal
import time
import warnings
from multiprocessing.connection import Connection
from typing import Any


def _quiet() -> None:
    warnings.simplefilter("ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    except Exception:
        pass


def _pin(cores: int = 2) -> str | None:
    """Pin this process to ``cores`` of the cores it may use (steadier host timing)."""
    getter = getattr(os, "sched_getaffinity", None)
    setter = getattr(os, "sched_setaffinity", None)
    if getter is None or setter is None:
        return None
    allowed = sorted(getter(0))
    if len(allowed) <= cores:
        return None
    chosen = allowed[-cores:]
    setter(0, chosen)
    return ",".join(map(str, chosen))


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def main(conn: Connection, payload: dict[str, Any]) -> None:
    """Entry point of the child (payload: config, mode, report, nvml_index)."""
    # Ctrl-C reaches the whole process group: the parent decides, and ends this child.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _measure(conn, payload)
    except Exception as error:  # anything unexpected is this mode's failure, not the run's
        conn.send(("failed", "failed", f"{type(error).__name__}: {_first_line(error)}"))
    finally:
        conn.close()


def _measure(conn: Connection, payload: dict[str, Any]) -> None:
    from pytest_gpuinfer.bench import faults
    from pytest_gpuinfer.bench.config import BenchConfig
    from pytest_gpuinfer.probes.report import Report

    config = BenchConfig.from_dict(payload["config"])
    mode: str = payload["mode"]
    report = Report.from_dict(payload["report"])
    _quiet()
    conn.send(("phase", "importing torch"))
    import torch

    from pytest_gpuinfer import loading
    from pytest_gpuinfer.bench.hardware import device_handle, energy_millijoules, nvml_session
    from pytest_gpuinfer.bench.measure import model_shape, run_workload
    from pytest_gpuinfer.bench.record import LoadFigures

    cuda = torch.cuda.is_available()
    pinned = _pin() if cuda and config.pin_cpu else None
    conn.send(("phase", "loading" + (f" (pinned to cores {pinned})" if pinned else "")))
    injected = faults.load_error(mode)
    started = time.perf_counter()
    try:
        if injected:
            raise RuntimeError(injected)
        loaded = loading.load_model(
            config.model, mode, device_map="cuda:0" if cuda else "cpu", report=report
        )
    except loading.ModelLoadOOM as error:
        conn.send(("failed", "oom", str(error)))
        return
    except loading.ModeUnavailable as error:
        conn.send(("failed", "failed", error.reason))
        return
    except Exception as error:
        conn.send(
            ("failed", "failed", f"load failed: {type(error).__name__}: {_first_line(error)}")
        )
        return
    seconds = time.perf_counter() - started
    allocated = int(torch.cuda.memory_allocated()) if cuda else None
    load = LoadFigures(seconds, loaded.footprint_bytes, loaded.applied, allocated)
    shape = model_shape(loaded.model, loaded.footprint_bytes)
    conn.send(("load", load.__dict__, shape.__dict__, str(loaded.model.device)))

    with nvml_session() as (nvml, _why):
        handle = None
        if nvml is not None and cuda and payload.get("nvml_index") is not None:
            handle, _ = device_handle(nvml, int(payload["nvml_index"]))
        energy = (lambda: energy_millijoules(nvml, handle)) if handle is not None else None
        for index, workload in enumerate(config.workloads()):
            conn.send(("phase", f"b{workload.batch_size}: warm-up", index))

            def on_repetition(count: int, rep: Any, elapsed: float, index: int = index) -> None:
                conn.send(("rep", index, rep.__dict__, count, elapsed))

            run = run_workload(
                loaded.model,
                mode,
                workload,
                config.repetitions,
                energy=energy,
                on_repetition=on_repetition,
                time_split=config.time_split,
            )
            conn.send(("workload", index, run.to_dict()))
    conn.send(("done",))

"""The process that measures one mode: load it, then run what the parent asks, round by round.

Started with multiprocessing's *spawn* context, so each mode gets a fresh interpreter,
a fresh CUDA context and its own allocator: no mode inherits another's cache or
fragmentation. Every mode's process stays alive for the whole run and the parent asks
them in turn for one round of repetitions (A, B, C, A, B, C ...): drift on the machine
(clocks, temperature, a neighbour) falls on every mode alike. Messages are tuples over
one duplex pipe; the child only ever answers.

    parent -> child              child -> parent
    (start-up)                   ("phase", text) ..., ("load", ...) | ("failed", kind, why)
    ("warmup", i)                ("warm", i, first_call_seconds, compiled)
    ("round", i, r, count)       ("round", i, [repetition dicts])
    ("finish", i)                ("workload", i, run dict)
    ("stop",)                    ("done",)
    any of them, out of memory   ("oom", i, reason)
"""

from __future__ import annotations

import os
import signal
import time
import warnings
from dataclasses import asdict
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
    """Pin this process to ``cores`` of the cores it may use (``--pin``)."""
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
        _serve(conn, payload)
    except (EOFError, BrokenPipeError):
        pass  # the parent went away: nothing to report to
    except Exception as error:  # anything unexpected is this mode's failure, not the run's
        conn.send(("failed", "failed", f"{type(error).__name__}: {_first_line(error)}"))
    finally:
        conn.close()


def _load(conn: Connection, payload: dict[str, Any]) -> tuple[Any, Any] | None:
    """Load the mode; tell the parent what it cost and what it resolved to."""
    from pytest_gpuinfer.bench.config import BenchConfig
    from pytest_gpuinfer.probes.report import Report

    config = BenchConfig.from_dict(payload["config"])
    mode: str = payload["mode"]
    report = Report.from_dict(payload["report"])
    _quiet()
    conn.send(("phase", "importing torch"))
    import torch

    from pytest_gpuinfer import loading
    from pytest_gpuinfer.bench.measure import footprint, resolution
    from pytest_gpuinfer.bench.record import LoadFigures

    cuda = torch.cuda.is_available()
    pinned = _pin() if cuda and config.pin_cpu else None
    conn.send(("phase", "loading" + (f" (pinned to cores {pinned})" if pinned else "")))
    started = time.perf_counter()
    try:
        loaded = loading.load_model(
            config.model, mode, device_map="cuda:0" if cuda else "cpu", report=report
        )
    except loading.ModelLoadOOM as error:
        conn.send(("failed", "oom", str(error)))
        return None
    except loading.ModeUnavailable as error:
        conn.send(("failed", "failed", error.reason))
        return None
    except Exception as error:
        conn.send(
            ("failed", "failed", f"load failed: {type(error).__name__}: {_first_line(error)}")
        )
        return None
    seconds = time.perf_counter() - started
    allocated = int(torch.cuda.memory_allocated()) if cuda else None
    load = LoadFigures(seconds, loaded.footprint_bytes, loaded.applied, allocated)
    shape = footprint(loaded.model, loaded.footprint_bytes)
    conn.send(("load", load.__dict__, shape, str(loaded.model.device), resolution(loaded.model)))
    return config, loaded


def _serve(conn: Connection, payload: dict[str, Any]) -> None:
    done = _load(conn, payload)
    if done is None:
        return
    config, loaded = done
    from pytest_gpuinfer.bench.hardware import device_handle, energy_millijoules, nvml_session
    from pytest_gpuinfer.bench.measure import WorkloadSession, is_oom

    workloads = config.workloads()
    sessions: dict[int, WorkloadSession] = {}
    with nvml_session() as (nvml, _why):
        handle = None
        cuda = str(loaded.model.device).startswith("cuda")
        if nvml is not None and cuda and payload.get("nvml_index") is not None:
            handle, _ = device_handle(nvml, int(payload["nvml_index"]))
        energy = (lambda: energy_millijoules(nvml, handle)) if handle is not None else None
        while True:
            command = conn.recv()
            kind = command[0]
            if kind == "stop":
                conn.send(("done",))
                return
            index = int(command[1])
            try:
                if kind == "warmup":
                    session = WorkloadSession(
                        loaded.model, workloads[index], energy=energy, compiled=config.compiled
                    )
                    sessions[index] = session
                    session.warm_up(config.repetitions.warmup)
                    run = session.run
                    conn.send(("warm", index, run.first_call_seconds, run.compiled))
                elif kind == "round":
                    reps = sessions[index].measure(
                        int(command[3]), int(command[2]), settle=config.repetitions.round_warmup
                    )
                    conn.send(("round", index, [asdict(r) for r in reps]))
                elif kind == "finish":
                    session = sessions[index]
                    if config.time_split:
                        session.split()
                    conn.send(("workload", index, session.finish().to_dict()))
                    del sessions[index]
            except Exception as error:
                if not is_oom(error):
                    raise
                session = sessions.pop(index)
                session.oom(error)
                run_data = session.finish().to_dict()
                conn.send(("oom", index, run_data["reason"], run_data))

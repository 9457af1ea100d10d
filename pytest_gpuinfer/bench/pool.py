"""The parent's handle on one mode's measuring process: start it, ask it, watch it, end it.

While it waits for an answer the parent samples NVML every ``POLL_SECONDS``: the child's
GPU memory (by its PID), the device's, and any process that is not ours.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from dataclasses import dataclass, field
from typing import Any

from pytest_gpuinfer.bench.hardware import GpuWatch
from pytest_gpuinfer.bench.measure import Footprint, Repetition, WorkloadRun
from pytest_gpuinfer.bench.record import LoadFigures

POLL_SECONDS = 0.05


class ChildGone(Exception):
    """The measuring process ended without answering."""


@dataclass
class ModeProcess:
    """One mode's process and what it reported so far."""

    mode: str
    tag: str
    process: Any = None
    conn: Any = None
    load: LoadFigures | None = None
    footprint: Footprint | None = None
    resolution: dict[str, Any] | None = None
    device: str = "cpu"
    failure: tuple[str, str] | None = None
    runs: dict[int, WorkloadRun] = field(default_factory=dict)
    partial: dict[int, list[Repetition]] = field(default_factory=dict)
    warm: dict[int, tuple[float | None, dict[str, Any] | None]] = field(default_factory=dict)
    peak_process: int | None = None
    peak_device: int | None = None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def alive(self) -> bool:
        return self.failure is None and self.process is not None and self.process.is_alive()

    def start(self, payload: dict[str, Any], watch: GpuWatch) -> None:
        from pytest_gpuinfer.bench import worker

        context = multiprocessing.get_context("spawn")
        parent_end, child_end = context.Pipe(duplex=True)
        self.process = context.Process(
            target=worker.main,
            args=(child_end, {**payload, "mode": self.mode}),
            name=f"gpuinfer-bench-{self.mode}",
        )
        self.process.start()
        child_end.close()
        self.conn = parent_end
        watch.own_pids.add(os.getpid())

    def receive(self, watch: GpuWatch, children: list[int]) -> tuple[Any, ...]:
        """The child's next message; samples NVML while waiting. ChildGone if it died."""
        while True:
            used, device = watch.sample(children)
            if used is not None and self.pid is not None:
                mine = watch.last_listing.get(self.pid)
                if mine is not None:
                    self.peak_process = max(self.peak_process or 0, mine)
            if device is not None:
                self.peak_device = max(self.peak_device or 0, device)
            if self.conn.poll(POLL_SECONDS):
                try:
                    message: tuple[Any, ...] = self.conn.recv()
                except EOFError:
                    raise ChildGone(self._death()) from None
                return message
            if not self.process.is_alive() and not self.conn.poll(0):
                raise ChildGone(self._death())

    def send(self, *command: Any) -> None:
        try:
            self.conn.send(command)
        except (BrokenPipeError, OSError):
            raise ChildGone(self._death()) from None

    def _death(self) -> str:
        self.process.join(timeout=5)
        code = self.process.exitcode
        detail = f"exit code {code}" + (" (killed: out of host memory?)" if code == -9 else "")
        return f"the child process died ({detail})"

    def end(self) -> None:
        """Terminate the child, then kill it if it does not go."""
        if self.process is None:
            return
        with contextlib.suppress(Exception):
            self.conn.close()
        with contextlib.suppress(Exception):
            self.process.join(timeout=0.1)
            if self.process.is_alive():
                self.process.terminate()
                self.process.join(timeout=5)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(timeout=5)

    def stop(self, watch: GpuWatch, children: list[int]) -> None:
        """Ask the child to exit, then make sure it did."""
        if self.alive:
            with contextlib.suppress(ChildGone):
                self.send("stop")
                self.receive(watch, children)
        self.end()

"""The progress display on stderr while a benchmark runs (it takes minutes on a big model)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """One status line, rewritten in place on a terminal; on a pipe, one line per phase
    (repetitions are summarised, not listed)."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.perf_counter()
        self._open_line = False

    def _elapsed(self) -> str:
        return f"{time.perf_counter() - self.started:6.1f}s"

    def phase(self, text: str, *, eta: str | None = None) -> None:
        """A new step ("[2/6] int8: loading"): always shown."""
        if not self.enabled:
            return
        self._end_line()
        self.stream.write(f"gpuinfer bench {self._elapsed()}  {text}{_eta(eta)}\n")
        self.stream.flush()

    def tick(self, text: str, *, eta: str | None = None) -> None:
        """A round's figures: rewrites the line on a terminal, silent on a pipe."""
        if not self.enabled or not self.tty:
            return
        self.stream.write(f"\r\x1b[2Kgpuinfer bench {self._elapsed()}  {text}{_eta(eta)}")
        self.stream.flush()
        self._open_line = True

    def _end_line(self) -> None:
        if self._open_line:
            self.stream.write("\n")
            self._open_line = False

    def close(self) -> None:
        if self.enabled:
            self._end_line()
            self.stream.flush()


def _eta(eta: str | None) -> str:
    return f"  [ETA {eta}]" if eta else ""


def format_eta(seconds: float) -> str:
    """12 -> "12s", 75 -> "1m15s", 3700 -> "1h01m": what is left, as a person reads it."""
    total = max(round(seconds), 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"

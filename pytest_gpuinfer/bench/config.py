"""What one benchmark run measures: the workload and the repetition policy, validated."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pytest_gpuinfer.probes.errors import InputError
from pytest_gpuinfer.probes.memory_workload import Workload
from pytest_gpuinfer.probes.modes import MODES
from pytest_gpuinfer.probes.report import parse_modes

DEFAULT_PROMPT_LEN = 256
DEFAULT_NEW_TOKENS = 64
"""LLM-Perf's workload (REFERENCE §10): a 256-token prompt, 64 new tokens, batch 1."""

PIN_CPU_DEFAULT = False
"""Measured on one H200 (REFERENCE §12, fp16 batch 1, 20 s / 20 repetitions): pinned to
two cores 14.85 ms/token with IQR/median 5.5 %, unpinned 13.32 ms/token with 3.4 %.
Pinning was slower and noisier, so it is opt-in (``--pin``)."""


DEFAULT_MAX_SECONDS = 600.0
"""``--max-seconds``: ten minutes of rounds per workload at most while seeking a precision."""


def bench_workload(batch_size: int, prompt_len: int, new_tokens: int) -> Workload:
    """The audit's :class:`Workload` (``seq_len`` is the prompt), checked for what a
    benchmark needs beyond it: a second token, so that decode has a step to time."""
    check_count(batch_size, "batch size")
    check_count(prompt_len, "prompt length")
    check_count(new_tokens, "new tokens", minimum=2, why=" (decode needs a 2nd token)")
    return Workload(batch_size=batch_size, seq_len=prompt_len, new_tokens=new_tokens)


@dataclass(frozen=True)
class Repetitions:
    """optimum-benchmark's policy: warm-up, then repeat until at least ``min_count``
    repetitions *and* ``min_seconds`` have passed."""

    warmup: int = 2
    min_count: int = 10
    min_seconds: float = 10.0
    max_spread: float = 0.05
    """A decode spread (IQR/median across repetitions) above this is reported too wide."""
    per_round: int = 1
    """Repetitions each mode runs per interleaved round (``gpuinfer bench``)."""
    round_warmup: int = 0
    """Un-timed generate() calls each mode makes at the start of every round, before its
    timed ones (``--round-warmup``): a mode re-entered after the others ran may start cold."""
    precision: float | None = None
    """After the minimum, keep adding rounds until every mode's decode ratio to the
    reference has a 95 % interval within +-precision of the ratio (``--precision``)."""
    max_seconds: float = DEFAULT_MAX_SECONDS
    """The cap on one workload's rounds while ``precision`` is not reached."""

    def __post_init__(self) -> None:
        check_count(self.warmup, "warm-up runs", minimum=0)
        check_count(self.per_round, "repetitions per round")
        check_count(self.round_warmup, "warm-up calls per round", minimum=0)
        check_count(self.min_count, "repetitions", minimum=2, why=" (a spread needs two)")
        if not _real(self.min_seconds) or not 0 <= self.min_seconds <= MAX_MIN_SECONDS:
            raise InputError(
                f"minimum seconds {self.min_seconds!r}: expected a number from 0 to "
                f"{MAX_MIN_SECONDS:g} (a day)"
            )
        if not _real(self.max_spread) or not self.max_spread > 0:
            raise InputError(f"max spread {self.max_spread!r}: expected a fraction > 0")
        if self.precision is not None and (not _real(self.precision) or not 0 < self.precision < 1):
            raise InputError(
                f"precision {self.precision!r}: expected a fraction between 0 and 1 "
                "(0.05 for +-5 %)"
            )
        if not _real(self.max_seconds) or not 0 < self.max_seconds <= MAX_MIN_SECONDS:
            raise InputError(
                f"maximum seconds {self.max_seconds!r}: expected a number > 0 and up to "
                f"{MAX_MIN_SECONDS:g} (a day)"
            )
        if self.precision is not None and self.max_seconds < self.min_seconds:
            raise InputError(
                f"maximum seconds {self.max_seconds:g} is below the minimum "
                f"{self.min_seconds:g}: expected max >= min"
            )


@dataclass(frozen=True)
class BenchConfig:
    """A whole ``gpuinfer bench`` run."""

    model: str
    modes: tuple[str, ...] = MODES
    batch_sizes: tuple[int, ...] = (1,)
    prompt_len: int = DEFAULT_PROMPT_LEN
    new_tokens: int = DEFAULT_NEW_TOKENS
    repetitions: Repetitions = field(default_factory=Repetitions)
    reference: str | None = None
    """The mode every figure is compared with; None: fp16 on a GPU, fp32 on a CPU."""
    time_split: bool = False
    """Also profile one generate() to split per-token time into GPU busy and host."""
    pin_cpu: bool = PIN_CPU_DEFAULT
    """Pin each child to two cores while it measures on a GPU."""
    compiled: bool = False
    """Measure with a static KV cache and transformers' own torch.compile of the decode
    step (CUDA graphs); the compile's time is reported apart."""

    def __post_init__(self) -> None:
        if not self.batch_sizes:
            raise InputError("no batch size given: expected one or more integers >= 1")
        for batch in self.batch_sizes:
            bench_workload(batch, self.prompt_len, self.new_tokens)
        if self.reference is not None and self.reference not in MODES:
            raise InputError(
                f"unknown reference mode {self.reference!r}; expected one of: {', '.join(MODES)}"
            )

    def workloads(self) -> list[Workload]:
        return [bench_workload(b, self.prompt_len, self.new_tokens) for b in self.batch_sizes]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["modes"] = list(self.modes)
        data["batch_sizes"] = list(self.batch_sizes)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchConfig:
        values = dict(data)
        values["modes"] = tuple(values["modes"])
        values["batch_sizes"] = tuple(values["batch_sizes"])
        values["repetitions"] = Repetitions(**values["repetitions"])
        return cls(**values)


MAX_MIN_SECONDS = 86400.0
"""The longest ``min_seconds`` a run may ask for: one day (``inf`` would never end)."""


def _real(value: object) -> bool:
    """A finite int or float, not a bool (NaN compares false with everything)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_count(value: object, what: str, *, minimum: int = 1, why: str = "") -> int:
    """``value`` as an int >= ``minimum``, else InputError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{what} {value!r}: expected an integer >= {minimum}{why}")
    return value


def parse_counts(text: str, what: str) -> tuple[int, ...]:
    """ "1,8" -> (1, 8); InputError for anything that is not a list of integers >= 1."""
    values: list[int] = []
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise InputError(f"no {what} in {text!r}: expected one or more integers >= 1")
    for item in items:
        if not item:
            raise InputError(f"{what} list {text!r} has an empty entry: expected e.g. 1,8")
        try:
            number = int(item)
        except ValueError:
            raise InputError(f"{what} {item!r}: expected an integer >= 1") from None
        check_count(number, what)
        if number in values:
            raise InputError(f"{what} {number} is given twice in {text!r}")
        values.append(number)
    return tuple(values)


def ordered_modes(modes: Sequence[str], reference: str) -> tuple[str, ...]:
    """The modes to measure, reference first (it is measured even when not asked for)."""
    chosen = parse_modes(list(modes))
    return (reference, *(m for m in chosen if m != reference))

"""What one benchmark run measures: the workload and the repetition policy, validated."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pytest_gpuinfer.probes.errors import InputError
from pytest_gpuinfer.probes.modes import MODES
from pytest_gpuinfer.probes.report import parse_modes

DEFAULT_PROMPT_LEN = 256
DEFAULT_NEW_TOKENS = 64
"""LLM-Perf's workload (REFERENCE §10): a 256-token prompt, 64 new tokens, batch 1."""


@dataclass(frozen=True)
class Workload:
    """One generate() shape: ``batch_size`` prompts of ``prompt_len`` tokens, ``new_tokens``
    generated with ``min_new_tokens = max_new_tokens``."""

    batch_size: int = 1
    prompt_len: int = DEFAULT_PROMPT_LEN
    new_tokens: int = DEFAULT_NEW_TOKENS

    def __post_init__(self) -> None:
        check_count(self.batch_size, "batch size")
        check_count(self.prompt_len, "prompt length")
        check_count(self.new_tokens, "new tokens", minimum=2, why=" (decode needs a 2nd token)")


@dataclass(frozen=True)
class Repetitions:
    """optimum-benchmark's policy: warm-up, then repeat until at least ``min_count``
    repetitions *and* ``min_seconds`` have passed."""

    warmup: int = 2
    min_count: int = 10
    min_seconds: float = 10.0
    max_spread: float = 0.05
    """A decode spread (IQR/median across repetitions) above this is reported too wide."""

    def __post_init__(self) -> None:
        check_count(self.warmup, "warm-up runs", minimum=0)
        check_count(self.min_count, "repetitions", minimum=2, why=" (a spread needs two)")
        if not isinstance(self.min_seconds, int | float) or self.min_seconds < 0:
            raise InputError(f"minimum seconds {self.min_seconds!r}: expected a number >= 0")
        if not isinstance(self.max_spread, int | float) or self.max_spread <= 0:
            raise InputError(f"max spread {self.max_spread!r}: expected a fraction > 0")


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
    pin_cpu: bool = True
    """Pin each child to two cores while it measures on a GPU (steadier host timing)."""

    def __post_init__(self) -> None:
        if not self.batch_sizes:
            raise InputError("no batch size given: expected one or more integers >= 1")
        for batch in self.batch_sizes:
            Workload(batch, self.prompt_len, self.new_tokens)
        if self.reference is not None and self.reference not in MODES:
            raise InputError(
                f"unknown reference mode {self.reference!r}; expected one of: {', '.join(MODES)}"
            )

    def workloads(self) -> list[Workload]:
        return [Workload(b, self.prompt_len, self.new_tokens) for b in self.batch_sizes]

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


def check_count(value: object, what: str, *, minimum: int = 1, why: str = "") -> int:
    """``value`` as an int >= ``minimum``, else InputError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{what} {value!r}: expected an integer >= {minimum}{why}")
    return value


def parse_counts(text: str, what: str) -> tuple[int, ...]:
    """ "1,8" -> (1, 8); InputError for anything that is not a list of integers >= 1."""
    values: list[int] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            number = int(item)
        except ValueError:
            raise InputError(f"{what} {item!r}: expected an integer >= 1") from None
        check_count(number, what)
        if number not in values:
            values.append(number)
    if not values:
        raise InputError(f"no {what} in {text!r}: expected one or more integers >= 1")
    return tuple(values)


def ordered_modes(modes: Sequence[str], reference: str) -> tuple[str, ...]:
    """The modes to measure, reference first (it is measured even when not asked for)."""
    chosen = parse_modes(list(modes))
    return (reference, *(m for m in chosen if m != reference))

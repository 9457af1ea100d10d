"""``--precision``: keep measuring rounds until every ratio to the reference is pinned down.

After the repetition policy's minimum, each further round ends with a check: the decode
ratio of every mode to the reference, with its bootstrap interval over the paired rounds
so far (the same statistic the record reports). The run stops when the widest interval is
within +-precision of its ratio, or when the workload's rounds reach ``max_seconds``; the
record says which, and how wide the widest interval was. The interval's half-width shrinks
as 1/sqrt(rounds) under steady noise, which gives the estimate of the rounds still needed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pytest_gpuinfer.bench.measure import Repetition, by_round
from pytest_gpuinfer.bench.stats import bootstrap_ratio

CHECK_RESAMPLES = 400
"""Bootstrap draws per check (the record's own interval uses the full count at the end)."""


@dataclass(frozen=True)
class PrecisionCheck:
    """Where one workload stands against ``--precision`` after ``rounds`` rounds."""

    target: float
    rounds: int
    seconds: float
    widest_mode: str | None
    widest_half_width: float | None
    """max(high - ratio, ratio - low) / ratio of the widest interval; None: not computable."""
    reached: bool

    def rounds_needed(self) -> int:
        """The rounds at which the widest interval should reach the target (1/sqrt(n))."""
        if self.reached or not self.widest_half_width:
            return self.rounds
        return math.ceil(self.rounds * (self.widest_half_width / self.target) ** 2)

    def stop_at(self, max_seconds: float) -> int:
        """The round count to stop at: this one when reached or out of time; else the
        1/sqrt(n) estimate as far as the time left allows, one more round at least."""
        if self.reached or self.seconds >= max_seconds:
            return self.rounds
        affordable = math.floor(self.rounds * max_seconds / max(self.seconds, 1e-9))
        return max(self.rounds + 1, min(self.rounds_needed(), affordable))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self, label: str) -> str:
        widest = (
            f"{self.widest_mode} +-{self.widest_half_width:.1%}"
            if self.widest_mode is not None and self.widest_half_width is not None
            else "no interval"
        )
        if self.reached:
            return (
                f"precision +-{self.target:.0%} reached for {label} after {self.rounds} "
                f"rounds ({self.seconds:.0f} s; widest: {widest})"
            )
        return (
            f"precision +-{self.target:.0%} NOT reached for {label} in {self.seconds:.0f} s "
            f"({self.rounds} rounds; widest: {widest}): about {self.rounds_needed()} rounds "
            "would be needed at this noise (raise --max-seconds or quiet the machine)"
        )


def round_medians(reps: Sequence[Repetition], new_tokens: int) -> dict[int, float]:
    """Round -> median decode seconds per token over that round's repetitions."""
    steps = new_tokens - 1
    return {
        r: statistics.median(rep.decode_s / steps for rep in group)
        for r, group in by_round(reps).items()
    }


def check_precision(
    partials: Mapping[str, Sequence[Repetition]],
    reference: str,
    new_tokens: int,
    *,
    target: float,
    seconds: float,
    rounds: int,
) -> PrecisionCheck:
    """The widest decode-ratio interval among the non-reference modes in ``partials``.

    With only the reference measured there is nothing to pin down: reached. A mode whose
    interval cannot be computed yet (under two paired rounds) is not reached."""
    theirs = round_medians(partials.get(reference, ()), new_tokens)
    widest: tuple[str | None, float | None] = (None, None)
    reached = True
    for mode, reps in partials.items():
        if mode == reference:
            continue
        mine = round_medians(reps, new_tokens)
        common = sorted(set(mine) & set(theirs))
        interval = bootstrap_ratio(
            [mine[r] for r in common], [theirs[r] for r in common], resamples=CHECK_RESAMPLES
        )
        if interval is None or not interval.ratio:
            return PrecisionCheck(target, rounds, seconds, mode, None, False)
        half = max(interval.high - interval.ratio, interval.ratio - interval.low) / interval.ratio
        if widest[1] is None or half > widest[1]:
            widest = (mode, half)
        reached = reached and half <= target
    return PrecisionCheck(target, rounds, seconds, widest[0], widest[1], reached)

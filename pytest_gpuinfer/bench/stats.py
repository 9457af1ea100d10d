"""Summary statistics of repeated timings: optimum-benchmark's latency fields and the spread."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), ``q`` in [0, 100]."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Latency:
    """optimum-benchmark's ``Latency``: the same fields, the same meaning (seconds;
    ``stdev`` is the population deviation, ``stdev_`` it in percent of the mean)."""

    unit: str
    values: list[float]
    count: int
    total: float
    mean: float
    p50: float
    p90: float
    p95: float
    p99: float
    stdev: float
    stdev_: float

    @classmethod
    def from_values(cls, values: Sequence[float], unit: str = "s") -> Latency:
        data = [float(v) for v in values]
        if not data:
            raise ValueError("a latency needs at least one value")
        mean = statistics.fmean(data)
        stdev = statistics.pstdev(data) if len(data) > 1 else 0.0
        return cls(
            unit=unit,
            values=data,
            count=len(data),
            total=sum(data),
            mean=mean,
            p50=percentile(data, 50),
            p90=percentile(data, 90),
            p95=percentile(data, 95),
            p99=percentile(data, 99),
            stdev=stdev,
            stdev_=stdev / abs(mean) * 100 if len(data) > 1 and mean else 0.0,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Spread:
    """How much repetitions disagree: coefficient of variation and IQR over the median."""

    median: float
    cv: float
    """Sample standard deviation / mean (0 for one value)."""
    iqr_over_median: float
    count: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        data = [float(v) for v in values]
        median = statistics.median(data)
        mean = statistics.fmean(data)
        cv = statistics.stdev(data) / mean if len(data) > 1 and mean else 0.0
        iqr = percentile(data, 75) - percentile(data, 25)
        return cls(
            median=median,
            cv=cv,
            iqr_over_median=iqr / median if median else 0.0,
            count=len(data),
        )

    def too_wide(self, limit: float) -> bool:
        """The robust spread (IQR/median) exceeds ``limit``."""
        return self.iqr_over_median > limit

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95
BOOTSTRAP_SEED = 0
"""Seeded: the same rounds give the same interval on every run and machine."""


@dataclass(frozen=True)
class RatioInterval:
    """A ratio of medians (this mode / the reference) with its bootstrap interval.

    Rounds are resampled in pairs (both modes' values of one round together), so drift
    that moved both modes in a round cancels in the ratio instead of widening it.
    """

    ratio: float
    low: float
    high: float
    confidence: float
    rounds: int

    @property
    def indistinguishable(self) -> bool:
        """The interval spans 1: these rounds cannot tell the two modes apart."""
        return self.low <= 1.0 <= self.high

    @property
    def verdict(self) -> str:
        if self.indistinguishable:
            return "indistinguishable"
        return "higher" if self.low > 1.0 else "lower"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


def bootstrap_ratio(
    candidate: Sequence[float],
    reference: Sequence[float],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> RatioInterval | None:
    """median(candidate) / median(reference) and its percentile bootstrap interval over
    paired rounds (``candidate[i]`` and ``reference[i]`` measured in round i); None with
    fewer than two rounds or a zero reference."""
    import random

    pairs = [(float(c), float(r)) for c, r in zip(candidate, reference, strict=False)]
    if len(pairs) < 2:
        return None
    ratio = _ratio_of_medians(pairs)
    if ratio is None:
        return None
    generator = random.Random(seed)
    draws: list[float] = []
    for _ in range(resamples):
        sample = [pairs[generator.randrange(len(pairs))] for _ in pairs]
        value = _ratio_of_medians(sample)
        if value is not None:
            draws.append(value)
    if not draws:
        return None
    tail = (1 - confidence) / 2 * 100
    return RatioInterval(
        ratio=ratio,
        low=percentile(draws, tail),
        high=percentile(draws, 100 - tail),
        confidence=confidence,
        rounds=len(pairs),
    )


def _ratio_of_medians(pairs: Sequence[tuple[float, float]]) -> float | None:
    reference = statistics.median(r for _, r in pairs)
    if not reference:
        return None
    return statistics.median(c for c, _ in pairs) / reference

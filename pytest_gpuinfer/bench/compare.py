"""``--baseline FILE``: this run against a saved record, as pytest-benchmark's compare does.

A figure regresses when it moved the wrong way by more than the threshold (a time or a
size grew, a rate or MBU fell); any regression makes ``gpuinfer bench`` exit 1. Rows
are matched by mode, batch size, prompt length and new tokens; rows either side lacks
are listed, not failed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_gpuinfer.bench.record import FIGURES, SCHEMA
from pytest_gpuinfer.probes.errors import InputError

DEFAULT_THRESHOLD = 0.10
DEFAULT_FIGURES: tuple[str, ...] = ("decode_seconds_per_token", "peak_reserved_bytes")
HIGHER_IS_BETTER = frozenset({"decode_tokens_per_second", "mbu"})


@dataclass(frozen=True)
class Change:
    """One figure of one row: baseline, now, and whether that is past the threshold."""

    mode: str
    batch_size: int
    figure: str
    baseline: float
    current: float
    regressed: bool

    @property
    def ratio(self) -> float:
        return self.current / self.baseline

    def line(self) -> str:
        flag = "REGRESSION" if self.regressed else "ok"
        return (
            f"{self.mode} b{self.batch_size} {self.figure}: {self.baseline:.6g} -> "
            f"{self.current:.6g} ({self.ratio:.3f}x) {flag}"
        )


def load_baseline(path: str | Path) -> dict[str, Any]:
    """A saved ``gpuinfer bench`` record; InputError (one line) for anything else."""
    target = Path(path)
    try:
        data = json.loads(target.read_text(encoding="utf-8"))
    except OSError as error:
        raise InputError(f"--baseline {str(target)!r}: {error.strerror or error}") from None
    except ValueError:
        raise InputError(f"--baseline {str(target)!r}: not JSON") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise InputError(
            f"--baseline {str(target)!r}: expected a `gpuinfer bench --output` record "
            f"(schema {SCHEMA})"
        )
    if not isinstance(data.get("results"), list):
        raise InputError(f"--baseline {str(target)!r}: the record has no results")
    return data


def parse_figures(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    for name in names:
        if name not in FIGURES:
            raise InputError(
                f"figure {name!r} in --compare-figures: expected one of {', '.join(FIGURES)}"
            )
    if not names:
        raise InputError(f"no figure in --compare-figures {text!r}")
    return names


def _key(row: dict[str, Any]) -> tuple[str, int, int, int]:
    return (
        str(row.get("mode")),
        int(row.get("batch_size") or 0),
        int(row.get("prompt_len") or 0),
        int(row.get("new_tokens") or 0),
    )


def compare(
    current: dict[str, Any],
    baseline: dict[str, Any],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    figures: tuple[str, ...] = DEFAULT_FIGURES,
) -> tuple[list[Change], list[str]]:
    """The changes of ``figures`` between two records' measured rows, and what could not
    be compared (one line each)."""
    before = {_key(r): r for r in baseline["results"] if r.get("status") == "measured"}
    changes: list[Change] = []
    unmatched: list[str] = []
    for row in current["results"]:
        if row.get("status") != "measured":
            continue
        key = _key(row)
        old = before.pop(key, None)
        if old is None:
            unmatched.append(f"{key[0]} b{key[1]}: not in the baseline")
            continue
        for name in figures:
            now, then = row["figures"].get(name), old.get("figures", {}).get(name)
            if now is None or not then:
                continue
            ratio = float(now) / float(then)
            worse = ratio < 1 - threshold if name in HIGHER_IS_BETTER else ratio > 1 + threshold
            changes.append(Change(key[0], key[1], name, float(then), float(now), worse))
    unmatched += [f"{k[0]} b{k[1]}: in the baseline, not measured now" for k in before]
    return changes, unmatched


def comparison_lines(
    changes: list[Change], unmatched: list[str], threshold: float, path: str
) -> list[str]:
    regressions = [c for c in changes if c.regressed]
    lines = [
        f"against the baseline {path} (threshold {threshold:.0%}): "
        + (f"{len(regressions)} regression(s)" if regressions else "no regression")
    ]
    lines += [c.line() for c in changes]
    lines += unmatched
    return lines

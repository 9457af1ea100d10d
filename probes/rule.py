"""One compatibility rule: a row of data with its source, and how it turns facts into a finding."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pytest_gpuinfer.probes.facts import Facts, UnknownFact
from pytest_gpuinfer.probes.modes import MODES, QUANTIZED_MODES
from pytest_gpuinfer.probes.report import Finding, Status

ALL: frozenset[str] = frozenset(MODES)
QUANTIZED: frozenset[str] = QUANTIZED_MODES
HALF: frozenset[str] = frozenset({"fp16", "fastpath"})
"""Modes whose weights and arithmetic are fp16 on a GPU (the fastpath loads in fp16)."""

UNCONFIRMED = "unconfirmed: "
"""Prefix of a finding whose rule encodes a case the sources do not settle."""


@dataclass(frozen=True)
class Rule:
    id: str
    modes: frozenset[str]
    device: Literal["cuda", "cpu", "any"]
    requirement: str
    """What must hold, written for a person; the reason starts with it."""
    otherwise: Status
    source: str
    applies: Callable[[Facts], bool]
    holds: Callable[[Facts], bool]
    found: Callable[[Facts], str]
    confirmed: bool = True
    """False where the sources disagree or are silent: the finding says "unconfirmed"."""

    def evaluate(self, facts: Facts) -> Finding | None:
        """None when the rule does not apply or its requirement holds."""
        try:
            if not self.applies(facts) or self.holds(facts):
                return None
            found = self.found(facts)
        except UnknownFact as unknown:
            return Finding(
                self.id, Status.UNKNOWN, f"{self.requirement}: unknown, because {unknown}"
            )
        prefix = "" if self.confirmed else UNCONFIRMED
        return Finding(self.id, self.otherwise, f"{prefix}{self.requirement}; found {found}")


def always(_: Facts) -> bool:
    return True


def never(_: Facts) -> bool:
    return False

"""One compatibility rule: a row of data with its source, and how it turns facts into a finding."""

from __future__ import annotations

import re
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


_GITHUB = re.compile(r"https?://github\.com/([\w.-]+)/([\w.-]+)/(?:issues|pull)/(\d+)")
SHORT_SOURCE_CHARS = 72


def short_source(source: str) -> str:
    """A source cut to a reference for a line of text: its first item, GitHub threads as
    ``repo#N``, parentheses dropped ("bitsandbytes issue #538", "pytorch#134790")."""
    first = _GITHUB.sub(lambda m: f"{m[2]}#{m[3]}", source.split(";", 1)[0]).strip()
    text = first
    while (stripped := re.sub(r"\s*\([^()]*\)", "", text)) != text:
        text = stripped
    text = text.split(" (", 1)[0].strip() or first
    if len(text) > SHORT_SOURCE_CHARS:
        text = text[: SHORT_SOURCE_CHARS - 3].rstrip(" ,:") + "..."
    return text


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
                self.id,
                Status.UNKNOWN,
                f"{self.requirement}: unknown, because {unknown}",
                self.source,
                confirmed=False,
            )
        prefix = "" if self.confirmed else UNCONFIRMED
        return Finding(
            self.id,
            self.otherwise,
            f"{prefix}{self.requirement}; found {found}",
            self.source,
            self.confirmed,
        )

    def applied(self, facts: Facts) -> bool:
        """Whether the rule speaks for these facts (its requirement held, or it gave a finding)."""
        try:
            return self.applies(facts)
        except UnknownFact:
            return False


def always(_: Facts) -> bool:
    return True


def never(_: Facts) -> bool:
    return False

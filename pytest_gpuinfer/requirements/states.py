"""What became of a test on one machine, in the words every report uses.

pytest's outcome says ``skipped`` both for a test whose requirement is unmet and for one
that would run on a simulated profile; the plugin tells them apart (its two skips are
their own exception types), and the JSON report, ``gpuinfer merge`` and the fleet page
name the result with one ``state``.
"""

from __future__ import annotations

from dataclasses import dataclass

WOULD_RUN = "would run"
"""Every requirement is met on a simulated profile; not executed (no such GPU here)."""
CANNOT_RUN = "cannot run"
"""A requirement is unmet here: the reason says which and what was found."""
SKIP_KINDS = (WOULD_RUN, CANNOT_RUN)
NOT_COLLECTED = "not collected"
NOT_RUN = "not run"
RAN = frozenset({"passed", "failed", "error", "xfailed", "xpassed"})
"""States (and outcomes) that mean the test body ran."""


@dataclass(frozen=True)
class State:
    name: str
    short: str
    """The text table's cell."""
    meaning: str
    """The legend's line."""


STATES: tuple[State, ...] = (
    State("passed", "pass", "ran and passed"),
    State("failed", "FAIL", "ran and failed"),
    State("error", "ERROR", "errored in setup or teardown"),
    State("xfailed", "xfail", "ran and failed as expected (xfail)"),
    State("xpassed", "XPASS", "ran and passed though expected to fail (xfail)"),
    State(
        WOULD_RUN,
        "would run",
        "requirements met on a simulated profile; not executed (no such GPU there)",
    ),
    State(CANNOT_RUN, "cannot run", "a requirement is unmet on that machine: see its reason"),
    State("skipped", "skip", "skipped for another reason (the test's own skip, a deselected mode)"),
    State(NOT_RUN, "not run", "collected but never reported (the run stopped)"),
    State(NOT_COLLECTED, "-", "not collected on that machine (deselected, or not in its subset)"),
)
BY_NAME = {state.name: state for state in STATES}


def state_of(outcome: str | None, skip_kind: str | None = None) -> str:
    """The state of a test from its outcome and the plugin's skip kind (if any)."""
    if outcome is None:
        return NOT_RUN
    if outcome == "skipped" and skip_kind in SKIP_KINDS:
        return skip_kind
    return outcome

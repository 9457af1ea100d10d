"""Turning an unmet requirement into a skip, or a failure under ``--gpuinfer-strict``."""

from __future__ import annotations

from typing import NoReturn

import pytest


def unmet(reason: str, *, strict: bool) -> NoReturn:
    """Skip the running test with ``reason``; fail it instead when ``strict``."""
    __tracebackhide__ = True
    if strict:
        pytest.fail(f"{reason} (--gpuinfer-strict: unmet requirements fail)", pytrace=False)
    # Report the skip at the test's own location, as a skip mark would, not in our code.
    raise pytest.skip.Exception(reason, _use_item_location=True)


def simulated_reason(profile: str) -> str:
    """The skip reason of a test that passes the gates but would run on a simulated GPU."""
    return (
        f"requirements met on simulated profile {profile}; not executed because the "
        "profile is simulated (no such GPU here)"
    )

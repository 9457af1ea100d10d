"""Turning an unmet requirement into a skip, or a failure under ``--gpuinfer-strict``.

The plugin's two skips carry their kind on the exception (``gpuinfer_skip_kind``), so
that the report can tell them from a test's own skip: "cannot run" (a requirement is
unmet here) and "would run" (every requirement is met on a simulated profile; the GPU
exists on paper). They stay pytest's own ``Skipped``, so every reporter shows them as
``SKIPPED`` with the reason alone.
"""

from __future__ import annotations

from typing import NoReturn

import pytest

from pytest_gpuinfer.requirements.states import CANNOT_RUN, SKIP_KINDS, WOULD_RUN

_KIND = "gpuinfer_skip_kind"


def _skip(reason: str, kind: str) -> NoReturn:
    __tracebackhide__ = True
    # Reported at the test's own location, as a skip mark would be, not in our code.
    error = pytest.skip.Exception(reason, _use_item_location=True)
    setattr(error, _KIND, kind)
    raise error


def unmet(reason: str, *, strict: bool) -> NoReturn:
    """Skip the running test with ``reason``; fail it instead when ``strict``."""
    __tracebackhide__ = True
    if strict:
        pytest.fail(f"{reason} (--gpuinfer-strict: unmet requirements fail)", pytrace=False)
    _skip(reason, CANNOT_RUN)


def would_run(profile: str) -> NoReturn:
    """Skip a test that passes every gate on simulated profile ``profile``."""
    __tracebackhide__ = True
    _skip(simulated_reason(profile), WOULD_RUN)


def skip_kind(error: BaseException | None) -> str | None:
    """ "would run" or "cannot run" for the plugin's own skips; None for any other."""
    kind = getattr(error, _KIND, None)
    return kind if kind in SKIP_KINDS else None


def simulated_reason(profile: str) -> str:
    """The skip reason of a test that passes the gates but would run on a simulated GPU."""
    return (
        f"requirements met on simulated profile {profile}; not executed because the "
        "profile is simulated (no such GPU here)"
    )

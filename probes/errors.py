"""The one error type for bad user input."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input from a user: one line naming the bad value and what was expected.

    The CLI turns it into exit code 2, the plugin into ``pytest.UsageError``; neither
    shows a traceback.
    """

"""`gpuinfer audit` reads the plugin's GPUINFER_* variables: command line > env > default.

The names and the boolean words are the plugin's (``plugin.options.OPTIONS``); the CLI
cannot import that table (it imports pytest), so the subset the audit reads is named here
and ``tests/test_cli_ecosystem.py`` checks it against the table.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from pytest_gpuinfer.probes.errors import InputError

AUDIT_ENVIRONMENT: Mapping[str, str] = {
    "profile": "GPUINFER_PROFILE",
    "modes": "GPUINFER_MODES",
    "model": "GPUINFER_MODEL",
    "strict": "GPUINFER_STRICT",
}
"""audit argument -> the plugin's variable for the same setting."""

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
_BOOL_WORDS = "1/0, true/false, yes/no, on/off"


def apply_environment(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, str]:
    """Fill each audit argument the command line left unset from its variable.

    Returns where each filled setting came from (``{"modes": "GPUINFER_MODES"}``).
    Raises InputError naming the variable for a value it cannot take.
    """
    sources: dict[str, str] = {}
    for dest, variable in AUDIT_ENVIRONMENT.items():
        if getattr(args, dest, None) not in (None, []):
            continue
        raw = environ.get(variable)
        if raw is None or not raw.strip():
            continue
        value: object = raw.strip()
        if dest == "strict":
            value = _bool(raw, variable)
        elif dest == "profile":
            value = [raw.strip()]
        setattr(args, dest, value)
        sources[dest] = variable
    return sources


def _bool(raw: str, variable: str) -> bool:
    text = raw.strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise InputError(f"{variable}={raw!r} is not a boolean; expected one of {_BOOL_WORDS}")

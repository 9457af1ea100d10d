"""The plugin's options: each one a command-line flag, an ini key and an environment variable.

Precedence is command line > environment > ini file. Every value is validated here, and a
bad one becomes a ``pytest.UsageError`` that names where it came from and what it was.
"""

from __future__ import annotations

import argparse
import os
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_BOOL_WORDS = "1/0, true/false, yes/no, on/off"

Kind = Literal["bool", "modes", "text", "path", "count"]


@dataclass(frozen=True)
class OptionSpec:
    dest: str
    flag: str
    ini: str
    env: str
    kind: Kind
    metavar: str | None
    help: str


OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "enabled",
        "--gpuinfer",
        "gpuinfer",
        "GPUINFER",
        "bool",
        None,
        "enable pytest-gpuinfer: probe the GPUs, gate marked tests, parametrize inference_mode",
    ),
    OptionSpec(
        "strict",
        "--gpuinfer-strict",
        "gpuinfer_strict",
        "GPUINFER_STRICT",
        "bool",
        None,
        "fail tests whose requirements are unmet instead of skipping them",
    ),
    OptionSpec(
        "modes",
        "--gpuinfer-modes",
        "gpuinfer_modes",
        "GPUINFER_MODES",
        "modes",
        "LIST",
        "comma-separated modes to parametrize inference_mode with "
        "(fp32, fp16, bf16, int8, nf4, fastpath; default: all)",
    ),
    OptionSpec(
        "profile",
        "--gpuinfer-profile",
        "gpuinfer_profile",
        "GPUINFER_PROFILE",
        "text",
        "NAME|FILE",
        "judge a simulated GPU (built-in profile name or profile file) instead of this machine's",
    ),
    OptionSpec(
        "report_path",
        "--gpuinfer-report",
        "gpuinfer_report",
        "GPUINFER_REPORT",
        "path",
        "PATH",
        "write the probe report and every test's outcome, mode and requirements as JSON",
    ),
    OptionSpec(
        "summary_path",
        "--gpuinfer-summary",
        "gpuinfer_summary",
        "GPUINFER_SUMMARY",
        "path",
        "PATH",
        "append a Markdown summary (would run, cannot run with its reason, passed, failed) "
        "to PATH, e.g. $GITHUB_STEP_SUMMARY",
    ),
    OptionSpec(
        "model",
        "--gpuinfer-model",
        "gpuinfer_model",
        "GPUINFER_MODEL",
        "text",
        "NAME|PATH",
        "model the gpuinfer_model fixture loads",
    ),
    OptionSpec(
        "requirements_path",
        "--gpuinfer-requirements",
        "gpuinfer_requirements",
        "GPUINFER_REQUIREMENTS",
        "path",
        "PATH",
        "write every collected test's hardware requirements as JSON (use with --collect-only; "
        "see docs/fleet.md)",
    ),
    OptionSpec(
        "machine",
        "--gpuinfer-machine",
        "gpuinfer_machine",
        "GPUINFER_MACHINE",
        "text",
        "NAME",
        "this machine's name in --gpuinfer-report, for `gpuinfer merge` (default: the host "
        "name, plus the profile when simulated)",
    ),
    OptionSpec(
        "share",
        "--gpuinfer-share",
        "gpuinfer_share",
        "GPUINFER_SHARE",
        "count",
        "N",
        "under xdist, let up to N workers share one GPU when the tests' declared memory "
        "fits (default 1: one GPU per worker; see docs/plugin.md)",
    ),
)

_BY_DEST = {spec.dest: spec for spec in OPTIONS}


@dataclass(frozen=True)
class Settings:
    """The plugin's resolved settings (what the ``gpuinfer_settings`` fixture returns)."""

    enabled: bool = False
    strict: bool = False
    profile: str | None = None
    model: str | None = None
    machine: str | None = None
    modes: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8", "nf4", "fastpath")
    """Modes ``inference_mode`` is parametrized with when a test's marker names none."""
    modes_explicit: bool = False
    """True when ``--gpuinfer-modes`` (or its ini key / variable) chose ``modes``. (The
    export's ``modes_selected`` is the list, ``modes``; this was called ``modes_selected``
    before, which still reads, with a DeprecationWarning.)"""
    report_path: Path | None = None
    summary_path: Path | None = None
    """Where ``--gpuinfer-summary`` appends the Markdown summary."""
    requirements_path: Path | None = None
    share: int = 1
    """Most xdist workers per GPU (``--gpuinfer-share``); the declared memory may allow fewer."""
    sources: dict[str, str] = field(default_factory=dict)
    """Where each setting came from, e.g. ``{"strict": "environment variable GPUINFER_STRICT"}``."""

    @property
    def modes_selected(self) -> bool:
        """Deprecated: ``modes_explicit`` (the export's ``modes_selected`` is ``modes``)."""
        import warnings

        warnings.warn(
            "gpuinfer_settings.modes_selected is deprecated: it is the bool modes_explicit "
            "(whether --gpuinfer-modes chose the modes); the list of modes, which the "
            "export calls modes_selected, is gpuinfer_settings.modes",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.modes_explicit

    def to_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "strict": self.strict,
            "profile": self.profile,
            "model": self.model,
            "machine": self.machine,
            "modes": list(self.modes),
            "modes_explicit": self.modes_explicit,
            "report_path": None if self.report_path is None else str(self.report_path),
            "summary_path": None if self.summary_path is None else str(self.summary_path),
            "requirements_path": (
                None if self.requirements_path is None else str(self.requirements_path)
            ),
            "share": self.share,
            "sources": dict(self.sources),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Settings:
        report_path = data.get("report_path")
        summary_path = data.get("summary_path")
        requirements_path = data.get("requirements_path")
        return cls(
            enabled=bool(data["enabled"]),
            strict=bool(data["strict"]),
            profile=data.get("profile"),
            model=data.get("model"),
            machine=data.get("machine"),
            modes=tuple(data["modes"]),
            modes_explicit=bool(data.get("modes_explicit", data.get("modes_selected", False))),
            report_path=None if report_path is None else Path(report_path),
            summary_path=None if summary_path is None else Path(summary_path),
            requirements_path=None if requirements_path is None else Path(requirements_path),
            share=int(data.get("share", 1)),
            sources=dict(data.get("sources", {})),
        )


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("gpuinfer", "GPU inference gating (pytest-gpuinfer)")
    for spec in OPTIONS:
        env_help = f" [env {spec.env}, ini {spec.ini}]"
        if spec.dest == "enabled":
            # --no-gpuinfer lets a command line switch off an ini/env "gpuinfer = true".
            group.addoption(
                spec.flag,
                dest="gpuinfer_enabled",
                action=argparse.BooleanOptionalAction,
                default=None,
                help=spec.help + env_help,
            )
        elif spec.kind == "bool":
            group.addoption(
                spec.flag,
                dest=f"gpuinfer_{spec.dest}",
                action="store_true",
                default=None,
                help=spec.help + env_help,
            )
        else:
            group.addoption(
                spec.flag,
                dest=f"gpuinfer_{spec.dest}",
                metavar=spec.metavar,
                default=None,
                help=spec.help + env_help,
            )
        parser.addini(
            spec.ini,
            type=_ini_type(spec),
            default=None,
            help=spec.help,
        )


def _ini_type(spec: OptionSpec) -> Literal["bool", "string"]:
    return "bool" if spec.kind == "bool" else "string"


def _raw(
    config: pytest.Config, spec: OptionSpec, environ: Mapping[str, str]
) -> tuple[object, str] | None:
    """The winning raw value of one option and a description of its source."""
    cli = config.getoption(f"gpuinfer_{spec.dest}", None)
    if cli is not None:
        return cli, f"command line {spec.flag}"
    env = environ.get(spec.env)
    if env is not None and env.strip() != "":
        return env, f"environment variable {spec.env}"
    try:
        ini = config.getini(spec.ini)
    except (pytest.UsageError, ValueError) as exc:  # pytest < 9.2 raises ValueError
        expected = f"; expected one of {_BOOL_WORDS}" if spec.kind == "bool" else ""
        raise pytest.UsageError(f"gpuinfer: ini option {spec.ini}: {exc}{expected}") from None
    if ini is None or ini == "":
        return None
    return ini, f"ini option {spec.ini}"


def _bool(value: object, source: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise pytest.UsageError(
        f"gpuinfer: {source}={value!r} is not a boolean; expected one of {_BOOL_WORDS}"
    )


def _count(value: object, source: str) -> int:
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1:
        raise pytest.UsageError(f"gpuinfer: {source}={value!r} is not a whole number >= 1")
    return int(text)


def parse_modes(value: str, source: str) -> tuple[str, ...]:
    """Parse "fp16,int8" into known, de-duplicated modes, or raise a UsageError."""
    from pytest_gpuinfer.probes.errors import InputError
    from pytest_gpuinfer.probes.modes import parse_mode_list

    try:
        return tuple(mode.name for mode in parse_mode_list(value))
    except InputError as exc:
        raise pytest.UsageError(f"gpuinfer: {source}={value!r}: {exc}") from None


def _report_path(value: str, source: str, base: Path) -> Path:
    path = Path(os.path.expanduser(value))
    if not path.is_absolute():
        path = base / path
    directory = path.parent
    if path.is_dir():
        raise pytest.UsageError(f"gpuinfer: {source}={value!r} is a directory; expected a file")
    if not directory.is_dir():
        raise pytest.UsageError(
            f"gpuinfer: {source}={value!r} cannot be written: directory {str(directory)!r} "
            "does not exist"
        )
    if not os.access(directory, os.W_OK | os.X_OK) or (
        path.exists() and not os.access(path, os.W_OK)
    ):
        raise pytest.UsageError(
            f"gpuinfer: {source}={value!r} cannot be written: permission denied"
        )
    return path


def is_enabled(config: pytest.Config, environ: Mapping[str, str] | None = None) -> bool:
    """Whether the plugin is on: ``--gpuinfer`` / ``--no-gpuinfer``, GPUINFER, ini ``gpuinfer``.

    Any other ``--gpuinfer-*`` flag given on the command line switches it on too, so that
    ``pytest --gpuinfer-strict`` never silently runs ungated.
    """
    environ = os.environ if environ is None else environ
    explicit = config.getoption("gpuinfer_enabled", None)
    if explicit is not None:
        return bool(explicit)
    for spec in OPTIONS[1:]:
        if config.getoption(f"gpuinfer_{spec.dest}", None) is not None:
            return True
    raw = _raw(config, _BY_DEST["enabled"], environ)
    return False if raw is None else _bool(*raw)


def ignored_flags_warning(config: pytest.Config) -> str | None:
    """What ``--no-gpuinfer`` makes pointless on the same command line, or None.

    ``pytest --no-gpuinfer --gpuinfer-strict`` runs ungated: strict has nothing to act on,
    and saying so beats a silent no-op (an ``addopts`` strict flag stays harmless).
    """
    if config.getoption("gpuinfer_enabled", None) is not False:
        return None
    given = [
        spec.flag
        for spec in OPTIONS[1:]
        if config.getoption(f"gpuinfer_{spec.dest}", None) is not None
    ]
    if not given:
        return None
    return (
        f"gpuinfer: {', '.join(given)} has nothing to act on: --no-gpuinfer switched the "
        "plugin off (no probing, no gating, no strict failures)"
    )


def resolve(config: pytest.Config, environ: Mapping[str, str] | None = None) -> Settings:
    """Resolve and validate every option; a bad value raises ``pytest.UsageError``."""
    environ = os.environ if environ is None else environ
    enabled = is_enabled(config, environ)
    values: dict[str, Any] = {"enabled": enabled}
    sources: dict[str, str] = {}
    for spec in OPTIONS[1:]:
        raw = _raw(config, spec, environ)
        if raw is None:
            continue
        value, source = raw
        sources[spec.dest] = source
        if spec.kind == "bool":
            values[spec.dest] = _bool(value, source)
        elif spec.kind == "modes":
            values["modes"] = parse_modes(str(value), source)
            values["modes_explicit"] = True
        elif spec.kind == "path":
            if not str(value).strip():
                raise pytest.UsageError(f"gpuinfer: {source} is empty; expected a file path")
            if source.startswith("ini") and config.inipath is not None:
                base = config.inipath.parent
            else:
                base = config.invocation_params.dir
            values[spec.dest] = _report_path(str(value), source, base)
        elif spec.kind == "count":
            values[spec.dest] = _count(value, source)
        else:
            text = str(value).strip()
            if not text:
                raise pytest.UsageError(f"gpuinfer: {source} is empty")
            if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in text):
                raise pytest.UsageError(
                    f"gpuinfer: {source}={value!r} holds a control character or line break; "
                    "expected one line of printable text"
                )
            values[spec.dest] = text
    settings = Settings(**values, sources=sources)
    check_output_paths(config, settings)
    return settings


def share_ignored(settings: Settings) -> str:
    """The warning for ``--gpuinfer-share N`` on a run without xdist workers."""
    source = settings.sources.get("share", "--gpuinfer-share")
    return (
        f"gpuinfer: {source}={settings.share} has no effect without pytest-xdist workers "
        "(-n N): only workers share a GPU"
    )


def check_output_paths(config: pytest.Config, settings: Settings) -> None:
    """The report and the export are two files, and neither is an input or the JUnit XML."""
    outputs = [
        (path, settings.sources.get(dest, dest))
        for dest, path in (
            ("report_path", settings.report_path),
            ("requirements_path", settings.requirements_path),
        )
        if path is not None
    ]
    if not outputs:
        return  # before the imports: a run that writes neither pays nothing for the check
    from pytest_gpuinfer.outputs import Outputs
    from pytest_gpuinfer.probes.errors import InputError

    files = Outputs()
    if settings.profile is not None:
        files.add_input(settings.profile, f"the profile ({settings.sources.get('profile')})")
    xml = getattr(config.option, "xmlpath", None)
    try:
        if xml:
            files.add(Path(xml).absolute(), "--junitxml")
        for path, source in outputs:
            files.add(path, source)
    except InputError as error:
        raise pytest.UsageError(f"gpuinfer: {error}") from None

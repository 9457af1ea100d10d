"""Regenerate the README's command transcripts from the commands they show.

    python scripts/regen_readme_outputs.py           # rewrite README.md's transcripts
    python scripts/regen_readme_outputs.py --check   # exit 1 with a diff when one is stale

A transcript is a ```text block whose first line is ``$ gpuinfer ...``. Each ``$ `` line
is a command; the lines under it are its output (stdout and stderr, as a terminal shows
them). ``$ echo $?`` shows the exit code of the command before it. A ``...`` line means
"output truncated here": regeneration keeps as many lines above it as the block has now
(delete lines above ``...`` to shorten a block, delete ``...`` to show everything).

The commands run as ``python -m pytest_gpuinfer`` from this checkout, in the repository
root, with the variables that change the audit's output removed (``GPUINFER_*``, the CUDA
allocator variables, ``CUDA_VISIBLE_DEVICES``). The README shows the CI machine: no GPU,
and the stack tox's ``current`` env pins (read from tox.ini). On any other machine this
script refuses to rewrite the README (``--force`` overrides), and
tests/test_docs_snippets.py skips its check, naming the difference. One normalisation:
the Python version in the stack line (``python 3.11.7, torch ...``) is not compared,
since CI's patch release is not pinned.

Exit codes: 0 up to date or rewritten; 1 ``--check`` found a stale transcript; 2 this
machine is not the CI stack, or a transcript's command is not a ``gpuinfer`` command.
"""

from __future__ import annotations

import argparse
import configparser
import difflib
import importlib.metadata
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

STACK_PACKAGES = ("torch", "transformers", "accelerate", "bitsandbytes", "optimum")


def ci_stack() -> dict[str, str | None]:
    """The versions the README's transcripts show, read from their one home: the pins of
    tox's `current` env in tox.ini (None: not pinned there, so not installed)."""
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini", encoding="utf-8")
    pins = dict(
        line.strip().split("==", 1)
        for line in tox["testenv:current"]["deps"].splitlines()
        if "==" in line
    )
    return {package: pins.get(package) for package in STACK_PACKAGES}


_FENCE = re.compile(r"^```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^```", re.MULTILINE | re.DOTALL)
_PROMPT = "$ "
_EXIT_CODE = "echo $?"
_TRUNCATED = "..."
_PYTHON_VERSION = re.compile(r"^python \d+\.\d+\.\d+\S*,", re.MULTILINE)
_DROPPED_VARIABLES = ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF", "CUDA_VISIBLE_DEVICES")


class TranscriptError(Exception):
    """A transcript this script cannot run; the message names it."""


@dataclass(frozen=True)
class Step:
    command: str
    """The command after ``$ ``."""
    shown: tuple[str, ...]
    """The output lines the block shows (above ``...`` when truncated)."""
    truncated: bool


def is_transcript(language: str, body: str) -> bool:
    return language == "text" and body.startswith(f"{_PROMPT}gpuinfer ")


def parse_transcript(body: str) -> list[Step]:
    steps: list[Step] = []
    command: str | None = None
    shown: list[str] = []
    truncated = False
    for line in body.splitlines():
        if line.startswith(_PROMPT):
            if command is not None:
                steps.append(Step(command, tuple(shown), truncated))
            command, shown, truncated = line[len(_PROMPT) :].strip(), [], False
        elif command is None:
            raise TranscriptError(f"transcript does not start with a {_PROMPT!r} line: {line!r}")
        elif line.strip() == _TRUNCATED:
            truncated = True
        elif not truncated:
            shown.append(line)
    if command is not None:
        steps.append(Step(command, tuple(shown), truncated))
    return steps


def command_environment() -> dict[str, str]:
    """This process's environment, less what would change the audit's output."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("GPUINFER") and name not in _DROPPED_VARIABLES
    }
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def run_command(command: str) -> tuple[list[str], int]:
    """The output lines (trailing blanks stripped) and exit code of one ``gpuinfer`` command."""
    argv = shlex.split(command)
    if not argv or argv[0] != "gpuinfer":
        raise TranscriptError(f"transcript command {command!r}: expected a `gpuinfer ...` command")
    done = subprocess.run(
        [sys.executable, "-m", "pytest_gpuinfer", *argv[1:]],
        cwd=ROOT,
        env=command_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [line.rstrip() for line in done.stdout.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines, done.returncode


def render_transcript(body: str) -> str:
    """The transcript with every command's output replaced by what it prints now."""
    out: list[str] = []
    last_code: int | None = None
    for step in parse_transcript(body):
        out.append(f"{_PROMPT}{step.command}")
        if step.command == _EXIT_CODE:
            if last_code is None:
                raise TranscriptError(f"{_PROMPT}{_EXIT_CODE} before any command")
            lines = [str(last_code)]
        else:
            lines, last_code = run_command(step.command)
        if step.truncated and len(lines) > len(step.shown):
            lines = [*lines[: len(step.shown)], _TRUNCATED]
        out.extend(lines)
    return "\n".join(out) + "\n"


def regenerate(text: str) -> str:
    """``text`` (a Markdown document) with each transcript block regenerated."""
    pieces: list[str] = []
    end = 0
    for match in _FENCE.finditer(text):
        if not is_transcript(match.group("lang"), match.group("body")):
            continue
        pieces.append(text[end : match.start("body")])
        pieces.append(render_transcript(match.group("body")))
        end = match.end("body")
    pieces.append(text[end:])
    return "".join(pieces)


def transcripts(text: str) -> list[list[Step]]:
    return [
        parse_transcript(m.group("body"))
        for m in _FENCE.finditer(text)
        if is_transcript(m.group("lang"), m.group("body"))
    ]


def _release(version: str | None) -> str | None:
    """``2.13.0+cpu`` -> ``2.13.0``: tox pins the release, the wheel adds its build."""
    return None if version is None else Version(version).public


def normalise(text: str) -> str:
    """What the check compares: the stack line's Python version is masked."""
    return _PYTHON_VERSION.sub("python X.Y.Z,", text)


def stack_differences() -> list[str]:
    """How this machine differs from the one the README shows; empty on the CI stack."""
    differences = []
    for package, expected in ci_stack().items():
        try:
            found: str | None = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found = None
        same = found is None if expected is None else _release(found) == expected
        if package == "torch" and found is not None:
            same = same and Version(found).local == "cpu"  # the README shows a CPU build
        if not same:
            differences.append(
                f"{package} {found or 'not installed'} (the README shows "
                f"{expected or 'not installed'})"
            )
    from pytest_gpuinfer.probes.nvml import probe_nvml

    gpus = probe_nvml(command_environment()).gpus
    if gpus:
        differences.append(f"{len(gpus)} GPU(s) visible (the README shows a machine without one)")
    return differences


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a transcript is stale")
    parser.add_argument("--force", action="store_true", help="run on a stack other than CI's")
    args = parser.parse_args(argv)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    differences = stack_differences()
    if differences and not args.force:
        print(f"regen_readme_outputs: not the CI stack: {'; '.join(differences)}", file=sys.stderr)
        return 2
    current = README.read_text(encoding="utf-8")
    try:
        fresh = regenerate(current)
    except TranscriptError as error:
        print(f"regen_readme_outputs: {README.name}: {error}", file=sys.stderr)
        return 2
    if normalise(fresh) == normalise(current):
        return 0
    if args.check:
        sys.stdout.writelines(
            difflib.unified_diff(
                current.splitlines(keepends=True),
                fresh.splitlines(keepends=True),
                "README.md",
                "README.md (regenerated)",
            )
        )
        return 1
    README.write_text(fresh, encoding="utf-8")
    print(f"regen_readme_outputs: rewrote the transcripts in {README.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

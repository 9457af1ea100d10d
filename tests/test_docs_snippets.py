"""The documents' blocks run as written, on a CPU: README.md and docs/*.md.

- **python**: a block whose first line names a file (``# conftest.py``,
  ``# test_generation.py``, ``# pyproject.toml``, in any language) is one file of that
  document's example project. The files of one document are written together and run with
  pytest through ``pytester``, as a user would run them: every test passes or skips, none
  fails, and the recommended configuration leaves no warning. Any other python block is a
  script: it is executed in a fresh namespace in an empty temporary directory, against the
  shipped tiny models.
- **ini / toml**: a block that is pytest configuration (a ``[pytest]``, ``[tool:pytest]``,
  ``[tool.pytest.ini_options]`` or ``[tool.pytest]`` section) is written as pytest.ini /
  setup.cfg / pyproject.toml beside one trivial test and run with pytest: exit 0, no
  unknown option, no PytestConfigWarning. Any other block must parse (configparser /
  tomllib); one the paragraph before it calls a profile is loaded by the profile loader.
  No value line carries a trailing comment (pytest keeps ``# ...`` in an ini value).
- **bash / console / sh**: each ``gpuinfer ...`` or ``python -m pytest_gpuinfer ...`` line
  (after an optional ``$ `` prompt) runs through the real CLI in a scratch directory,
  unless a rule of ``_skip_reason`` says why not; it exits 0 or 1, never 2, never with a
  traceback. Other lines (pip, git, tox, pytest, kubectl, output) are not run; every line
  is classified, and a minimum number must run (see "Shell lines" below).
- **README transcripts** (```text blocks starting ``$ gpuinfer``) match what
  ``scripts/regen_readme_outputs.py`` regenerates (its docstring says what is compared).

json and yaml blocks are not run.
"""

from __future__ import annotations

import configparser
import difflib
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from script_modules import load_script

from pytest_gpuinfer.probes.profiles import load_profile

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - pytest depends on tomli below 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))

_FENCE = re.compile(r"^```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^```", re.MULTILINE | re.DOTALL)
_FILE_HEADER = re.compile(r"#\s*(?P<name>[\w][\w./-]*\.(?:py|toml|ini|cfg))\s*$")


@dataclass(frozen=True)
class Block:
    document: Path
    line: int
    language: str
    text: str
    before: str
    """The paragraph just above the block."""

    @property
    def file_name(self) -> str | None:
        """The project file this block is, when its first line names one."""
        first = self.text.split("\n", 1)[0]
        match = _FILE_HEADER.fullmatch(first.strip())
        return None if match is None else match.group("name")

    @property
    def label(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def blocks(document: Path) -> list[Block]:
    text = document.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip().rsplit("\n\n", 1)[-1]
        found.append(Block(document, line, match.group("lang"), match.group("body"), before))
    return found


ALL_BLOCKS = [block for document in DOCUMENTS for block in blocks(document)]
SCRIPTS = [b for b in ALL_BLOCKS if b.language == "python" and b.file_name is None]
PROJECTS = {
    document: [b for b in blocks(document) if b.file_name is not None]
    for document in DOCUMENTS
    if any(b.language == "python" and b.file_name is not None for b in blocks(document))
}


def test_the_documents_have_python_blocks_to_run() -> None:
    python = [b for b in ALL_BLOCKS if b.language == "python"]
    assert len(python) >= 6
    assert {b.document.name for b in python} >= {"writing-tests.md", "loading.md", "plugin.md"}
    # Every python block is run by one of the two tests below.
    assert len(python) == len(SCRIPTS) + sum(
        1 for files in PROJECTS.values() for b in files if b.language == "python"
    )


def test_a_project_names_each_file_once() -> None:
    for document, files in PROJECTS.items():
        names = [b.file_name for b in files]
        assert len(names) == len(set(names)), f"{document.name} writes a file twice: {names}"


@pytest.mark.parametrize("block", SCRIPTS, ids=[b.label for b in SCRIPTS])
def test_python_block_runs(
    block: Block,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    code = compile(block.text, block.label, "exec")
    exec(code, {"__name__": "__doc_snippet__"})


@pytest.mark.parametrize(
    "document", list(PROJECTS), ids=[str(d.relative_to(ROOT)) for d in PROJECTS]
)
def test_document_project_runs_under_pytest(document: Path, pytester: pytest.Pytester) -> None:
    for block in PROJECTS[document]:
        assert block.file_name is not None
        target = pytester.path / block.file_name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.text, encoding="utf-8")
    has_config = any(b.file_name in ("pyproject.toml", "pytest.ini") for b in PROJECTS[document])
    result = pytester.runpytest_subprocess(
        "-p", "no:randomly", "-p", "no:cacheprovider", "--gpuinfer"
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0, result.stdout.str()
    assert outcomes.get("errors", 0) == 0, result.stdout.str()
    assert outcomes.get("passed", 0) + outcomes.get("skipped", 0) >= 1
    if has_config:
        # The recommended configuration carries the filters its own tests need.
        assert "warnings" not in outcomes, result.stdout.str()


# --- ini and TOML blocks -------------------------------------------------------------------

_PYTEST_SECTIONS = {
    "[pytest]": "pytest.ini",
    "[tool:pytest]": "setup.cfg",
    "[tool.pytest.ini_options]": "pyproject.toml",
    "[tool.pytest]": "pyproject.toml",
}
CONFIGS = [b for b in ALL_BLOCKS if b.language in ("ini", "toml", "cfg")]


def pytest_config_file(block: Block) -> str | None:
    """The file pytest reads this block from, when it is pytest configuration."""
    for line in block.text.splitlines():
        if line.strip() in _PYTEST_SECTIONS:
            return _PYTEST_SECTIONS[line.strip()]
    return None


PYTEST_CONFIGS = [b for b in CONFIGS if pytest_config_file(b) is not None]
OTHER_CONFIGS = [b for b in CONFIGS if pytest_config_file(b) is None]


def trailing_comment(line: str, language: str) -> bool:
    """Whether a value line ends in a comment (``key = 1  # why``)."""
    if language != "toml":
        # pytest reads ini values raw: `#` or `;` after a value is part of the value.
        stripped = line.strip()
        return bool(stripped) and stripped[0] not in "#;" and re.search(r"\s[#;]", line) is not None
    quote = ""
    escaped = False
    for index, char in enumerate(line):
        if quote:
            if escaped:
                escaped = False
            elif char == "\\" and quote == '"':
                escaped = True
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "#":
            return bool(line[:index].strip())
    return False


def test_the_documents_have_config_blocks_to_run() -> None:
    assert len(PYTEST_CONFIGS) >= 2
    assert {b.document.name for b in PYTEST_CONFIGS} >= {"plugin.md", "writing-tests.md"}
    assert len(OTHER_CONFIGS) >= 1


@pytest.mark.parametrize("block", CONFIGS, ids=[b.label for b in CONFIGS])
def test_config_block_has_no_trailing_comment(block: Block) -> None:
    # A comment after a value breaks the line in an ini file (exit 4 from the plugin's ini
    # option), and a TOML line pasted into an ini file carries it along: comments go on
    # lines of their own in both.
    commented = [line for line in block.text.splitlines() if trailing_comment(line, block.language)]
    assert not commented, f"{block.label}: move the comment onto a line of its own: {commented}"


@pytest.mark.parametrize("block", PYTEST_CONFIGS, ids=[b.label for b in PYTEST_CONFIGS])
def test_pytest_config_block_runs(block: Block, pytester: pytest.Pytester) -> None:
    name = pytest_config_file(block)
    assert name is not None
    (pytester.path / name).write_text(block.text, encoding="utf-8")
    pytester.makepyfile(test_trivial="def test_trivial():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.OK, output
    assert "unknown config option" not in output.lower(), output
    assert "PytestConfigWarning" not in output, output
    assert f"configfile: {name}" in output, output
    if re.search(r"^gpuinfer\s*=\s*true\s*$", block.text, re.MULTILINE):
        assert "gpuinfer: modes:" in output, output  # the ini key enabled the plugin


@pytest.mark.parametrize("block", OTHER_CONFIGS, ids=[b.label for b in OTHER_CONFIGS])
def test_other_config_block_parses(block: Block, tmp_path: Path) -> None:
    if block.language != "toml":
        configparser.ConfigParser().read_string(block.text, source=block.label)
        return
    data = tomllib.loads(block.text)
    if "profile" not in block.before.lower():
        return
    path = tmp_path / (block.file_name or "profile.toml")
    path.write_text(block.text, encoding="utf-8")
    profile = load_profile(path)
    assert profile.name == data["name"]
    assert profile.gpu_count == data.get("gpu_count", 1)
    for package, version in data.get("software", {}).items():
        assert profile.software[package] == version


# --- Shell lines ---------------------------------------------------------------------------
#
# Allow rule: a line runs when, after an optional `$ ` prompt and with `\` continuations
# joined, it is `gpuinfer ...` or `python -m pytest_gpuinfer ...` and no deny rule below
# applies. Deny rules, in order (each skip says which one):
#   1. not a gpuinfer command: pip, git, tox, pytest, kubectl, venv set-up, and console
#      output lines are not run here (pytest lines are what the pytester tests exercise);
#   2. needs a shell: a pipe, redirection, `&&`, `;` or a glob;
#   3. `gpuinfer bench`: minutes of measuring on a CPU (tests/test_bench.py runs it small);
#   4. a variable that is not a stand-in ($NAME);
#   5. an input path (an argument with a `/` or a file suffix, not the value of an output
#      option) that neither the repository nor a stand-in provides: a CI run's reports, a
#      kubectl dump, a Hub id such as `org/model` (which needs the network).
# Stand-ins, in a scratch directory that is the command's working directory:
#   ./my-model, ./my-llama (the docs' "your model"): the shipped tiny trained LM;
#   requirements.json: written by fleet.md's own `pytest --collect-only -q
#   --gpuinfer-requirements requirements.json`, over one marked test;
#   $GITHUB_STEP_SUMMARY: a file in the scratch directory.
# An output option's directory (`--output docs/compatibility.md`) is created there.

SHELL_LANGUAGES = ("bash", "console", "sh", "shell")
MIN_SHELL_LINES_RUN = 8
_SHELL_OPERATORS = {"&&", "||", "|", ";", ">", ">>", "<", "2>", "&"}
_OUTPUT_OPTIONS = {"--output", "--chart", "--markdown", "--html", "--out", "--json"}
_FILE_SUFFIXES = (".json", ".toml", ".txt", ".png", ".html", ".md", ".csv", ".xml")
TINY_MODEL = ROOT / "pytest_gpuinfer" / "data" / "tiny-trained-lm"
_MODEL_STAND_INS = ("./my-model", "my-model", "./my-llama", "my-llama")
_GENERATED_STAND_INS = ("requirements.json",)
_VARIABLE_STAND_INS = {"$GITHUB_STEP_SUMMARY": "step-summary.md"}
_MARKED_TEST = """import pytest


@pytest.mark.gpuinfer(modes=["int8"], free_memory="8GiB")
def test_int8() -> None:
    pass
"""


@dataclass(frozen=True)
class ShellLine:
    block: Block
    line: int
    command: str
    argv: tuple[str, ...]
    """The gpuinfer arguments (after `gpuinfer`), stand-in variables substituted."""
    skip: str | None
    """The deny rule that keeps this line from running; None when it runs."""
    gpuinfer: bool

    @property
    def label(self) -> str:
        return f"{self.block.document.relative_to(ROOT)}:{self.line}"


def _logical_lines(block: Block) -> list[tuple[int, str]]:
    lines: list[tuple[int, str]] = []
    pending = ""
    start = 0
    for offset, raw in enumerate(block.text.splitlines(), start=block.line + 1):
        if not pending:
            start = offset
        text = raw.strip()
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        lines.append((start, pending + text))
        pending = ""
    return lines


def _input_paths(args: list[str]) -> list[str]:
    paths = []
    for index, arg in enumerate(args):
        if arg.startswith("-") or (index and args[index - 1] in _OUTPUT_OPTIONS):
            continue
        value = arg.split("=", 1)[1] if "=" in arg else arg
        if "/" in value or value.endswith(_FILE_SUFFIXES):
            paths.append(value)
    return paths


def _skip_reason(argv: list[str]) -> str | None:
    if any(token in _SHELL_OPERATORS or any(c in token for c in "*?") for token in argv):
        return "rule 2: needs a shell (pipe, redirection, && or a glob)"
    if argv[:1] == ["bench"]:
        return "rule 3: gpuinfer bench measures for minutes on a CPU"
    unknown = [a for a in argv if "$" in a and a not in _VARIABLE_STAND_INS]
    if unknown:
        return f"rule 4: names a variable with no stand-in: {unknown[0]}"
    for path in _input_paths(argv[1:]):
        provided = path in _MODEL_STAND_INS or path in _GENERATED_STAND_INS
        if not provided and not (ROOT / path).exists():
            return f"rule 5: needs {path}, which neither the repository nor a stand-in provides"
    return None


def shell_lines(block: Block) -> list[ShellLine]:
    found = []
    for line, text in _logical_lines(block):
        text = text.removeprefix("$ ")
        try:
            words = shlex.split(text, comments=True)
        except ValueError:
            words = []  # console output with an odd quote: not a command
        if not words:
            continue
        if words[0] == "gpuinfer":
            argv = words[1:]
        elif words[0] in ("python", "python3") and words[1:3] == ["-m", "pytest_gpuinfer"]:
            argv = words[3:]
        else:
            not_ours = f"rule 1: not a gpuinfer command ({words[0]})"
            found.append(ShellLine(block, line, text, (), not_ours, gpuinfer=False))
            continue
        argv_run = tuple(_VARIABLE_STAND_INS.get(a, a) for a in argv)
        found.append(ShellLine(block, line, text, argv_run, _skip_reason(argv), gpuinfer=True))
    return found


SHELL_LINES = [line for b in ALL_BLOCKS if b.language in SHELL_LANGUAGES for line in shell_lines(b)]
GPUINFER_LINES = [line for line in SHELL_LINES if line.gpuinfer]


def test_every_shell_line_is_classified_and_enough_run() -> None:
    assert all(line.skip is None or line.skip.startswith("rule ") for line in SHELL_LINES)
    run = [line for line in GPUINFER_LINES if line.skip is None]
    assert len(run) >= MIN_SHELL_LINES_RUN, [line.label for line in run]
    # Every skip names one of the five rules above; the commonest ones are in use.
    used = {line.skip.split(":", 1)[0] for line in SHELL_LINES if line.skip is not None}
    assert {"rule 1", "rule 5"} <= used <= {f"rule {n}" for n in range(1, 6)}, used


def _prepare_scratch(line: ShellLine, scratch: Path) -> None:
    for name in _MODEL_STAND_INS:
        if name in line.argv and not (scratch / name).exists():
            (scratch / name).symlink_to(TINY_MODEL, target_is_directory=True)
    if "requirements.json" in line.argv:
        (scratch / "test_marked.py").write_text(_MARKED_TEST, encoding="utf-8")
        done = subprocess.run(
            [
                *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only"),
                *("-q", "--gpuinfer-requirements", "requirements.json", "test_marked.py"),
            ],
            cwd=scratch,
            env=_environment(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    for index, arg in enumerate(line.argv[1:], start=1):
        if line.argv[index - 1] in _OUTPUT_OPTIONS:
            (scratch / arg).parent.mkdir(parents=True, exist_ok=True)


@pytest.mark.parametrize("line", GPUINFER_LINES, ids=[line.label for line in GPUINFER_LINES])
def test_shell_line_runs(line: ShellLine, tmp_path: Path) -> None:
    if line.skip is not None:
        pytest.skip(f"{line.command}: {line.skip}")
    _prepare_scratch(line, tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "pytest_gpuinfer", *line.argv],
        cwd=tmp_path,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = done.stdout + done.stderr
    assert "Traceback" not in output, f"{line.label}: {line.command}\n{output}"
    # 0 and 1 are verdicts; 2 would mean the documented command is bad input.
    assert done.returncode in (0, 1), f"{line.label}: {line.command}\n{output}"


# --- README transcripts --------------------------------------------------------------------


def _regen() -> ModuleType:
    return load_script(ROOT / "scripts" / "regen_readme_outputs.py")


def _environment() -> dict[str, str]:
    environment: dict[str, str] = _regen().command_environment()
    return environment


def test_the_readme_has_transcripts_with_exit_codes() -> None:
    steps = _regen().transcripts((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(steps) >= 2
    commands = [step.command for transcript in steps for step in transcript]
    assert sum(command.startswith("gpuinfer audit") for command in commands) >= 2
    assert "echo $?" in commands


def test_readme_transcripts_are_what_the_commands_print() -> None:
    regen = _regen()
    differences = regen.stack_differences()
    if differences:
        pytest.skip(f"the README shows the CI stack; here: {'; '.join(differences)}")
    current = (ROOT / "README.md").read_text(encoding="utf-8")
    fresh = regen.regenerate(current)
    diff = "".join(
        difflib.unified_diff(
            regen.normalise(current).splitlines(keepends=True),
            regen.normalise(fresh).splitlines(keepends=True),
            "README.md",
            "regenerated",
        )
    )
    assert not diff, f"stale: run `python scripts/regen_readme_outputs.py`\n{diff}"


def test_a_truncated_transcript_keeps_its_length_and_shows_the_exit_code() -> None:
    regen = _regen()
    body = "$ gpuinfer audit --profile t4 --modes int8\nstale\nstale\n...\n$ echo $?\n7\n"
    rendered = regen.render_transcript(body)
    assert rendered == (
        "$ gpuinfer audit --profile t4 --modes int8\ngpuinfer audit\n==============\n...\n"
        "$ echo $?\n0\n"
    )

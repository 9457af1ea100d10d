"""A second public table of verdicts, each row researched from a public artefact.

(GPU profile with overrides, mode) -> verdict and exit codes, in the shape of
``test_verdict_cases.py`` and with none of its rows. Six groups, one per way a confident
verdict went wrong before: version floors between packages, bitsandbytes binaries, the
fastpath, the platform (Tegra, aarch64 servers), the closed world (versions newer than any
table) and precision per architecture. The rows live in ``public_cases_stack.py`` and
``public_cases_machine.py``, their sources in ``public_case_sources.py``;
``docs/public-cases.md`` is rendered from them
(``render_markdown``); regenerate it with ``PYTHONPATH=. python tests/public_cases.py``.

GPUs without a built-in profile are written to a profile file at run time (``GPU_FILES``),
so a row does not depend on another branch's profile names. One assumption: a profile
file takes a ``platform`` key, ``"x86_64"`` (the default), ``"aarch64"`` (a server such as
GH200) or ``"tegra"`` (Jetson); only the PLATFORM rows use it.

Where a row says "wheel", the file was read from the release's wheel on PyPI
(``pip download --no-deps NAME==V``); "cuobjdump" means ``cuobjdump --list-elf`` (CUDA
13.5, package nvidia-cuda-cuobjdump) run on the library named.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from public_case_sources import GPU_FILES, VerdictCase
from public_cases import CASES, DOC, GROUPS, render_markdown

from pytest_gpuinfer.cli.main import main
from pytest_gpuinfer.probes.probe import probe
from pytest_gpuinfer.probes.rule import UNCONFIRMED


def _profile_arg(case: VerdictCase, directory: Path) -> str:
    """A built-in profile string as it is, or a GPU_FILES entry written to a file."""
    name, _, overrides = case.profile.partition("@")
    if name not in GPU_FILES:
        return case.profile
    software = dict(item.split("=", 1) for item in overrides.split(",") if item)
    data = {"name": name, **GPU_FILES[name], "software": software}
    path = directory / f"{name}-{CASES.index(case)}.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def _id(case: VerdictCase) -> str:
    return f"{case.profile.split('@')[0]}-{case.mode}-{case.status}-{CASES.index(case)}"


def test_the_table_is_big_enough_new_and_sourced() -> None:
    from test_verdict_cases import CASES as EXISTING

    assert len(CASES) >= 40
    assert all(len(group) >= 5 for _, group in GROUPS)
    assert all(case.source for case in CASES)
    assert len({(c.profile, c.mode) for c in CASES}) == len(CASES)
    assert not {(c.profile, c.mode) for c in CASES} & {(c.profile, c.mode) for c in EXISTING}


def test_the_doc_page_is_current() -> None:
    assert DOC.read_text(encoding="utf-8") == render_markdown(), (
        "docs/public-cases.md is stale: run `PYTHONPATH=. python tests/public_cases.py`"
    )


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_public_case(case: VerdictCase, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile = _profile_arg(case, tmp_path)
    verdict = probe(profile, modes=[case.mode]).verdicts[case.mode]
    said = f"{verdict.status.value}: {verdict.reason}"
    assert verdict.status.value == case.status, said
    unconfirmed = any(f.message.startswith(UNCONFIRMED) for f in verdict.findings)
    if case.unsettled:
        assert case.status == "unknown" or unconfirmed, said
    elif case.status == "unsupported":
        # one confirmed refusal settles it, whatever else is unconfirmed beside it
        assert any(
            f.status.value == "unsupported" and not f.message.startswith(UNCONFIRMED)
            for f in verdict.findings
        ), said
    else:
        assert not unconfirmed, said
    told = f"{verdict.reason} {verdict.resolves_to or ''}".lower()
    assert case.reason_contains.lower() in told, said
    argv = ["audit", "--profile", profile, "--modes", case.mode]
    capsys.readouterr()
    assert main([*argv, "--json"]) == case.exit_code
    report = json.loads(capsys.readouterr().out)
    assert report["verdicts"][case.mode]["status"] == case.status
    assert main([*argv, "--strict"]) == case.strict_exit_code
    capsys.readouterr()

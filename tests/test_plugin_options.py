"""The plugin's options as a user meets them: flags, ini keys, variables, precedence, errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_gpuinfer.plugin import options
from pytest_gpuinfer.probes.report import MODES

pytest_plugins = ["pytester"]

SETTINGS_PROBE = r"""
def test_settings(gpuinfer_settings):
    s = gpuinfer_settings
    print("\nSETTINGS", s.enabled, s.strict, s.profile, s.model, ",".join(s.modes),
          s.report_path)
"""


def settings_line(pytester: pytest.Pytester, *args: str) -> str:
    pytester.makepyfile(test_settings=SETTINGS_PROBE)
    result = pytester.runpytest("-s", "-p", "no:randomly", *args)
    result.assert_outcomes(passed=1)
    lines = [line for line in result.outlines if line.startswith("SETTINGS")]
    assert len(lines) == 1, result.outlines
    return lines[0]


def test_default_modes_are_the_probe_modes() -> None:
    assert options.Settings().modes == MODES


def test_dormant_by_default(pytester: pytest.Pytester) -> None:
    assert settings_line(pytester) == f"SETTINGS False False None None {','.join(MODES)} None"


def test_every_option_from_the_command_line(pytester: pytest.Pytester) -> None:
    line = settings_line(
        pytester,
        "--gpuinfer",
        "--gpuinfer-strict",
        "--gpuinfer-modes",
        "int8, fp16",
        "--gpuinfer-profile",
        "t4",
        "--gpuinfer-model",
        "tiny-llama",
        "--gpuinfer-report",
        "out.json",
    )
    assert line == f"SETTINGS True True t4 tiny-llama int8,fp16 {pytester.path / 'out.json'}"


def test_ini_keys(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        """
        [pytest]
        gpuinfer = true
        gpuinfer_strict = yes
        gpuinfer_modes = nf4
        gpuinfer_profile = h100
        gpuinfer_model = some/model
        gpuinfer_report = reports/run.json
        """
    )
    (pytester.path / "reports").mkdir()
    line = settings_line(pytester)
    expected = pytester.path / "reports" / "run.json"
    assert line == f"SETTINGS True True h100 some/model nf4 {expected}"


def test_environment_variables(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUINFER", "1")
    monkeypatch.setenv("GPUINFER_STRICT", "on")
    monkeypatch.setenv("GPUINFER_MODES", "fp32")
    monkeypatch.setenv("GPUINFER_PROFILE", "a10")
    monkeypatch.setenv("GPUINFER_MODEL", "m")
    monkeypatch.setenv("GPUINFER_REPORT", "r.json")
    line = settings_line(pytester)
    assert line == f"SETTINGS True True a10 m fp32 {pytester.path / 'r.json'}"


def test_precedence_command_line_then_environment_then_ini(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini(
        """
        [pytest]
        gpuinfer = true
        gpuinfer_modes = nf4
        gpuinfer_profile = h100
        gpuinfer_model = from-ini
        """
    )
    monkeypatch.setenv("GPUINFER_MODES", "int8")
    monkeypatch.setenv("GPUINFER_PROFILE", "t4")
    line = settings_line(pytester, "--gpuinfer-profile", "l4")
    # profile: CLI over env over ini; modes: env over ini; model: ini only.
    assert line == "SETTINGS True False l4 from-ini int8 None"


def test_no_gpuinfer_switches_off_an_ini_setting(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ngpuinfer = true\n")
    assert settings_line(pytester, "--no-gpuinfer").startswith("SETTINGS False")


def test_environment_can_switch_off_the_ini(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini("[pytest]\ngpuinfer = true\n")
    monkeypatch.setenv("GPUINFER", "0")
    assert settings_line(pytester).startswith("SETTINGS False")


def test_any_gpuinfer_flag_on_the_command_line_enables(pytester: pytest.Pytester) -> None:
    assert settings_line(pytester, "--gpuinfer-strict").startswith("SETTINGS True True")


def test_ini_settings_alone_do_not_enable(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ngpuinfer_strict = true\n")
    assert settings_line(pytester).startswith("SETTINGS False True")


def assert_usage_error(result: pytest.RunResult, *fragments: str) -> None:
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    output = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in output
    assert "During handling" not in output
    errors = [line for line in result.errlines if line.startswith("ERROR:")]
    assert len(errors) == 1, result.errlines
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_unknown_mode_on_the_command_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--gpuinfer", "--gpuinfer-modes", "fp16,fp8")
    assert_usage_error(result, "--gpuinfer-modes", "'fp16,fp8'", "'fp8'", "int8")


def test_unknown_mode_in_the_environment_names_the_variable(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPUINFER_MODES", "int4")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--gpuinfer")
    assert_usage_error(result, "environment variable GPUINFER_MODES", "'int4'")


def test_bad_boolean_in_the_environment(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPUINFER", "maybe")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest()
    assert_usage_error(result, "GPUINFER", "'maybe'", "not a boolean")


def test_bad_boolean_in_the_ini_file(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ngpuinfer = sometimes\n")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest()
    assert_usage_error(
        result, "ini option gpuinfer", "'sometimes'", "expected one of 1/0, true/false"
    )


def test_no_gpuinfer_warns_that_strict_has_nothing_to_act_on(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--no-gpuinfer", "--gpuinfer-strict", "--gpuinfer-modes", "int8")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*PytestConfigWarning: gpuinfer: --gpuinfer-strict, --gpuinfer-modes has nothing "
            "to act on: --no-gpuinfer switched the plugin off*"
        ]
    )
    assert "gpuinfer:" not in result.stdout.lines[0]


def test_no_gpuinfer_alone_warns_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    pytester.makeini("[pytest]\ngpuinfer_strict = true\n")
    result = pytester.runpytest("--no-gpuinfer")
    result.assert_outcomes(passed=1)
    assert "nothing to act on" not in result.stdout.str()


def test_mode_list_forgives_case_and_spaces(pytester: pytest.Pytester) -> None:
    line = settings_line(pytester, "--gpuinfer-modes", " INT8 , Fp16")
    assert line.startswith("SETTINGS True")
    assert options.parse_modes(" INT8 , Fp16", "here") == ("int8", "fp16")


@pytest.mark.parametrize("value", ["int8,,fp16", "int8,", "fp16,FP16"])
def test_mode_list_refuses_empty_entries_and_repeats(pytester: pytest.Pytester, value: str) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--gpuinfer-modes", value)
    assert_usage_error(result, "--gpuinfer-modes", repr(value))


def test_unknown_profile(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--gpuinfer", "--gpuinfer-profile", "t5")
    assert_usage_error(result, "--gpuinfer-profile", "'t5'", "unknown profile")


def test_malformed_profile_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    (pytester.path / "broken.json").write_text('{"name": "x", "gpu_name": ', encoding="utf-8")
    result = pytester.runpytest("--gpuinfer", "--gpuinfer-profile", "broken.json")
    assert_usage_error(result, "--gpuinfer-profile", "broken.json", "not valid JSON")


def test_schema_invalid_profile_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    (pytester.path / "odd.json").write_text(
        '{"name": "odd", "base": "t4", "colour": "green"}', encoding="utf-8"
    )
    result = pytester.runpytest("--gpuinfer", "--gpuinfer-profile", "odd.json")
    assert_usage_error(result, "odd.json", "'colour'")


def test_report_path_in_a_missing_directory(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--gpuinfer", "--gpuinfer-report", "nowhere/report.json")
    assert_usage_error(result, "--gpuinfer-report", "'nowhere/report.json'", "does not exist")


def test_report_path_that_is_a_directory(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    (pytester.path / "out").mkdir()
    result = pytester.runpytest("--gpuinfer", "--gpuinfer-report", "out")
    assert_usage_error(result, "--gpuinfer-report", "'out'", "is a directory")


@pytest.mark.skipif(
    os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions, not root"
)
def test_report_path_in_a_read_only_directory(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    locked = pytester.path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = pytester.runpytest("--gpuinfer", "--gpuinfer-report", str(locked / "r.json"))
    finally:
        locked.chmod(0o700)
    assert_usage_error(result, "--gpuinfer-report", "permission denied")


def test_help_lists_every_option_with_its_ini_key_and_variable(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    text = result.stdout.str()
    for spec in options.OPTIONS:
        assert spec.flag in text
        assert spec.env in text
        assert spec.ini in text


def test_report_path_default_base_is_the_invocation_directory(pytester: pytest.Pytester) -> None:
    sub = pytester.mkdir("sub")
    pytester.makepyfile("def test_x(): pass")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(sub)
        result = pytester.runpytest(str(pytester.path), "--gpuinfer", "--gpuinfer-report", "r.json")
    result.assert_outcomes(passed=1)
    assert Path(sub / "r.json").is_file()

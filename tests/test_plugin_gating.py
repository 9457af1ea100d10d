"""Markers, mode parametrization, strict mode and profiles, through pytester as a user runs them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fakes import nvml_specs

from pytest_gpuinfer import __version__

pytest_plugins = ["pytester"]

InstallNvml = Callable[[dict[str, Any] | None], None]


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:randomly", "-rs", *args)


def assert_collection_error(result: pytest.RunResult, *fragments: str) -> None:
    output = result.stdout.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED, output
    assert "Traceback" not in output
    assert "During handling" not in output
    assert "pytest_gpuinfer" not in output.replace(f"gpuinfer-{__version__}", "")
    result.stdout.fnmatch_lines(["*ERROR collecting*"])
    for fragment in fragments:
        assert fragment in output, (fragment, output)


# -- dormant ------------------------------------------------------------------------------


def test_dormant_registers_the_marker_for_strict_markers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.gpuinfer(gpus=8, compute_capability=">=12.0")
        def test_marked():
            pass
        """
    )
    result = run(pytester, "--strict-markers")
    # Dormant: the mark is accepted and does nothing; no header, no summary.
    result.assert_outcomes(passed=1)
    assert "gpuinfer" not in result.stdout.str().replace(f"gpuinfer-{__version__}", "")


def test_strict_config_in_the_ini_file(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nstrict = true\n")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.gpuinfer(modes=["fp32"])
        def test_marked():
            pass
        """
    )
    run(pytester).assert_outcomes(passed=1)
    run(pytester, "--gpuinfer").assert_outcomes(passed=1)


def test_markers_listing_shows_the_signature(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.gpuinfer(modes=[[]...[]], gpus=N, *"])


def test_dormant_fixtures_skip_with_a_hint(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_report(gpu_report):
            pass

        def test_mode(inference_mode):
            pass
        """
    )
    result = run(pytester)
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(
        ["SKIPPED [[]1[]] *:1: pytest-gpuinfer is not enabled: run pytest with --gpuinfer *"]
    )


def test_disabled_with_p_no(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_plain():
            pass
        """
    )
    result = run(pytester, "-p", "no:gpuinfer")
    result.assert_outcomes(passed=1)
    assert "gpuinfer" not in result.stdout.str()
    # Our options are gone with the plugin, so --gpuinfer is then a usage error.
    assert run(pytester, "-p", "no:gpuinfer", "--gpuinfer").ret == pytest.ExitCode.USAGE_ERROR


# -- requirement markers against a fake NVML ----------------------------------------------


def test_hardware_requirements_on_a_t4(pytester: pytest.Pytester, fake_nvml: InstallNvml) -> None:
    fake_nvml(nvml_specs.t4())
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.gpuinfer(gpus=1, compute_capability=">=7.5", total_memory="12GiB")
        def test_fits():
            pass

        @pytest.mark.gpuinfer(compute_capability=">=8.0,<9.0")
        def test_ampere():
            pass

        @pytest.mark.gpuinfer(free_memory="40GiB")
        def test_big():
            pass

        @pytest.mark.gpuinfer(gpus=2)
        def test_two():
            pass

        @pytest.mark.gpuinfer(tensor_cores=["int8", "bf16"])
        def test_bf16_cores():
            pass

        @pytest.mark.gpuinfer(packages={"packaging": ">=1"})
        def test_package_ok():
            pass

        @pytest.mark.gpuinfer(packages={"packaging": "<1", "no-such-dist-xyz": ""})
        def test_packages_missing():
            pass
        """
    )
    result = run(pytester, "--gpuinfer")
    result.assert_outcomes(passed=2, skipped=5)
    result.stdout.fnmatch_lines_random(
        [
            "SKIPPED [[]1[]] test_*.py:7: needs compute_capability >=8.0,<9.0; "
            "found GPU 0 Tesla T4 (7.5)",
            "SKIPPED [[]1[]] test_*.py:11: needs free_memory 40.00 GiB; "
            "found 14.50 GiB free on GPU 0 Tesla T4 (7.5)",
            "SKIPPED [[]1[]] test_*.py:15: needs gpus=2; found 1 GPU",
            "SKIPPED [[]1[]] test_*.py:19: needs tensor_cores int8, bf16; GPU 0 Tesla T4 (7.5) "
            "has tensor cores for fp16, int8, int4 (missing bf16)",
            "SKIPPED [[]1[]] test_*.py:27: needs package packaging<1; found packaging *; "
            "needs package no-such-dist-xyz; found it not installed",
        ]
    )


def test_no_gpu_names_the_probe_reason(pytester: pytest.Pytester, fake_nvml: InstallNvml) -> None:
    fake_nvml(nvml_specs.driver_not_loaded())
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.gpuinfer(gpus=1, free_memory="1GiB")
        def test_gpu():
            pass
        """
    )
    result = run(pytester, "--gpuinfer")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        ["SKIPPED * needs gpus=1, free_memory 1GiB; found no GPU: *driver*"]
    )


def test_gtx_1660_has_no_tensor_cores(pytester: pytest.Pytester, fake_nvml: InstallNvml) -> None:
    fake_nvml(nvml_specs.gtx1660())
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.gpuinfer(tensor_cores=["fp16"])
        def test_cores():
            pass
        """
    )
    result = run(pytester, "--gpuinfer")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        ["*needs tensor_cores fp16; GPU 0 NVIDIA GeForce GTX 1660 SUPER (7.5) has no tensor cores"]
    )


def test_class_and_module_marks_merge(pytester: pytest.Pytester, fake_nvml: InstallNvml) -> None:
    fake_nvml(nvml_specs.a100_x4())
    pytester.makepyfile(
        """
        import pytest

        pytestmark = pytest.mark.gpuinfer(
            compute_capability=">=7.0", tensor_cores=["fp16"], packages={"packaging": ">=1"}
        )

        @pytest.mark.gpuinfer(gpus=2, tensor_cores=["bf16"])
        class TestGroup:
            def test_inherits(self, gpuinfer_settings):
                pass

            # closest wins for a scalar: this test asks for cc 9.0, the A100 has 8.0
            @pytest.mark.gpuinfer(compute_capability=">=9.0", packages={"packaging": "<1"})
            def test_overrides(self):
                pass

            @pytest.mark.gpuinfer(gpus=8)
            def test_more_gpus(self):
                pass
        """
    )
    result = run(pytester, "--gpuinfer", "--gpuinfer-report", "r.json")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines_random(
        [
            "SKIPPED * needs compute_capability >=9.0; found GPU 0 NVIDIA A100-SXM4-40GB (8.0); "
            "needs compute_capability >=9.0; found GPU 1 NVIDIA A100-SXM4-40GB (8.0); "
            "needs package packaging<1,>=1; found packaging *",
            "SKIPPED * needs gpus=8; found 4 GPUs",
        ]
    )
    import json

    tests = json.loads((pytester.path / "r.json").read_text())["tests"]
    inherits = next(t for t in tests if t["nodeid"].endswith("test_inherits"))
    assert inherits["requirements"] == {
        "gpus": 2,
        "compute_capability": ">=7.0",
        "tensor_cores": ["bf16", "fp16"],
        "packages": {"packaging": ">=1"},
    }


@pytest.mark.parametrize(
    ("marker", "fragments"),
    [
        ("gpus='two'", ["gpus='two'", "whole number"]),
        ("gpus=0", ["gpus=0"]),
        ("gpus=True", ["gpus=True"]),
        ("modes=['int8', 'fp8']", ["unknown name 'fp8'", "fastpath"]),
        ("modes='int8'", ["modes='int8' is not a list"]),
        ("compute_capability='7.5'", ["compute_capability='7.5'", ">=7.5"]),
        ("compute_capability=7.5", ["compute_capability=7.5", "not a string"]),
        ("free_memory='10G'", ["free_memory", "'10G'"]),
        ("total_memory='-1GiB'", ["total_memory", "'-1GiB'"]),
        ("free_memory='abc'", ["free_memory", "'abc'"]),
        ("tensor_cores=['int9']", ["unknown name 'int9'"]),
        ("packages={'bitsandbytes': '>>0.45'}", ["'>>0.45'", "bitsandbytes"]),
        ("packages=['bitsandbytes']", ["packages=['bitsandbytes']", "dict"]),
        ("memory='8GiB'", ["unknown gpuinfer keyword memory='8GiB'", "free_memory"]),
        ("'int8'", ["keywords only", "'int8'"]),
    ],
)
def test_bad_marker_is_a_collection_error_naming_test_and_value(
    pytester: pytest.Pytester, marker: str, fragments: list[str]
) -> None:
    pytester.makepyfile(
        test_bad=f"""
        import pytest

        def test_fine():
            pass

        @pytest.mark.gpuinfer({marker})
        def test_wrong():
            pass
        """
    )
    result = run(pytester, "--gpuinfer")
    assert_collection_error(result, "test_bad.py::test_wrong", *fragments)


def test_bad_class_mark_names_each_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_bad="""
        import pytest

        @pytest.mark.gpuinfer(free_memory="lots")
        class TestX:
            def test_a(self):
                pass
        """
    )
    assert_collection_error(run(pytester, "--gpuinfer"), "test_bad.py::TestX::test_a", "'lots'")


def test_strict_fails_instead_of_skipping(
    pytester: pytest.Pytester, fake_nvml: InstallNvml
) -> None:
    fake_nvml(nvml_specs.t4())
    pytester.makepyfile(
        """
        import pytest

        @pytest.fixture
        def expensive():
            raise AssertionError("fixtures of a gated test must not run")

        @pytest.mark.gpuinfer(compute_capability=">=8.0")
        def test_needs_ampere(expensive):
            pass

        @pytest.mark.gpuinfer(compute_capability=">=7.5")
        def test_fine():
            pass
        """
    )
    skipped = run(pytester, "--gpuinfer")
    skipped.assert_outcomes(passed=1, skipped=1)
    strict = run(pytester, "--gpuinfer", "--gpuinfer-strict")
    strict.assert_outcomes(passed=1, errors=1)
    strict.stdout.fnmatch_lines(
        ["*needs compute_capability >=8.0; found GPU 0 Tesla T4 (7.5) (--gpuinfer-strict: *"]
    )
    assert "fixtures of a gated test must not run" not in strict.stdout.str()
    assert "Traceback" not in strict.stdout.str()


# -- inference_mode -----------------------------------------------------------------------

MODE_TESTS = """
import pytest

@pytest.mark.gpuinfer(modes=["int8", "fastpath", "bf16"])
def test_x(inference_mode):
    assert inference_mode in ("int8", "fastpath", "bf16")

def test_all(inference_mode):
    pass

def test_chosen(gpu_report):
    pass

@pytest.mark.parametrize("inference_mode", ["fp16"])
def test_own(inference_mode):
    pass
"""


def test_mode_ids_from_the_marker_and_default(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_modes=MODE_TESTS)
    result = pytester.runpytest("--gpuinfer", "--collect-only", "-q")
    result.stdout.fnmatch_lines(
        [
            "test_modes.py::test_x[[]int8[]]",
            "test_modes.py::test_x[[]fastpath[]]",
            "test_modes.py::test_x[[]bf16[]]",
            "test_modes.py::test_all[[]fp32[]]",
            "test_modes.py::test_all[[]fp16[]]",
            "test_modes.py::test_all[[]bf16[]]",
            "test_modes.py::test_all[[]int8[]]",
            "test_modes.py::test_all[[]nf4[]]",
            "test_modes.py::test_all[[]fastpath[]]",
            "test_modes.py::test_chosen",
            "test_modes.py::test_own[[]fp16[]]",
            "11 tests collected*",
        ]
    )


def test_modes_option_selects_within_the_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_modes=MODE_TESTS)
    result = pytester.runpytest("--gpuinfer-modes", "int8,fp32", "--collect-only", "-q")
    result.stdout.fnmatch_lines(
        [
            "test_modes.py::test_x[[]int8[]]",
            "test_modes.py::test_all[[]int8[]]",
            "test_modes.py::test_all[[]fp32[]]",
            "test_modes.py::test_chosen",
            "test_modes.py::test_own[[]fp16[]]",
            "5 tests collected*",
        ]
    )


def test_no_selected_mode_leaves_one_skipped_instance(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_modes=MODE_TESTS)
    result = run(pytester, "--gpuinfer-modes", "nf4", "-k", "test_x")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        [
            "SKIPPED * none of the test's modes (int8, fastpath, bf16) is selected by "
            "command line --gpuinfer-modes (nf4)"
        ]
    )


def test_unsupported_modes_are_skipped_parameters_with_the_rule(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_modes=MODE_TESTS)
    result = run(pytester, "--gpuinfer-profile", "t4", "-k", "test_x")
    result.assert_outcomes(skipped=3)
    result.stdout.fnmatch_lines_random(
        [
            "SKIPPED [[]1[]] test_modes.py:3: mode bf16 is unsupported on simulated t4: *(7.5) "
            "[[]rule bf16-*[]]",
            "SKIPPED [[]2[]] test_modes.py:3: requirements met on simulated profile t4; "
            "not executed because the profile is simulated (no such GPU here)",
        ]
    )


def test_unsupported_mode_fails_under_strict(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_modes=MODE_TESTS)
    result = run(pytester, "--gpuinfer-profile", "t4", "--gpuinfer-strict", "-k", "test_x", "-ra")
    result.assert_outcomes(skipped=2, errors=1)
    result.stdout.fnmatch_lines(
        ["ERROR test_modes.py::test_x[[]bf16[]] - Failed: mode bf16 is unsup*"]
    )


def test_mode_runs_where_supported(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.gpuinfer(modes=["fp32"])
        def test_x(inference_mode, gpu_report):
            assert inference_mode == "fp32"
            assert gpu_report.verdicts["fp32"].ok

        @pytest.mark.gpuinfer(modes=["fp32"])
        def test_without_parameter():
            pass
        """
    )
    # No NVML here: fp32 is judged for the CPU and runs.
    result = run(pytester, "--gpuinfer", "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_x[[]fp32[]] PASSED*"])


# -- profiles -----------------------------------------------------------------------------


def test_profile_gates_as_on_that_gpu_and_runs_nothing_on_it(
    pytester: pytest.Pytester, fake_nvml: InstallNvml
) -> None:
    fake_nvml(nvml_specs.h100())  # the real machine must not matter
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.gpuinfer(compute_capability=">=8.0")
        def test_ampere():
            pass

        @pytest.mark.gpuinfer(total_memory="12GiB")
        def test_fits():
            pass

        def test_reads_the_report(gpu_report):
            assert gpu_report.profile == "t4"
            assert gpu_report.gpus[0].name == "Tesla T4"

        def test_plain():
            pass
        """
    )
    result = run(pytester, "--gpuinfer", "--gpuinfer-profile", "t4")
    result.assert_outcomes(passed=2, skipped=2)
    result.stdout.fnmatch_lines_random(
        [
            "SKIPPED [[]1[]] *:3: needs compute_capability >=8.0; found GPU 0 Tesla T4 (7.5)",
            "SKIPPED [[]1[]] *:7: requirements met on simulated profile t4; not executed because "
            "the profile is simulated (no such GPU here)",
        ]
    )


def test_profile_file(pytester: pytest.Pytester) -> None:
    (pytester.path / "mine.json").write_text(
        '{"name": "t4-old-bnb", "base": "t4", "software": {"bitsandbytes": "0.36.0"}}',
        encoding="utf-8",
    )
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.gpuinfer(packages={"bitsandbytes": ">=0.45"})
        def test_new_bnb():
            pass
        """
    )
    result = run(pytester, "--gpuinfer-profile", "mine.json")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        ["SKIPPED * needs package bitsandbytes>=0.45; found bitsandbytes 0.36.0"]
    )


def test_dormant_run_imports_no_probe_and_no_heavy_module(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import sys

        def test_modules():
            loaded = [m for m in ("torch", "transformers", "pynvml", "pytest_gpuinfer.probes",
                                  "pytest_gpuinfer.requirements.marker",
                                  "pytest_gpuinfer.plugin.fixtures")
                      if m in sys.modules]
            assert loaded == []
        """
    )
    pytester.runpytest_subprocess("-p", "no:randomly").assert_outcomes(passed=1)

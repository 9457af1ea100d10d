"""`@pytest.mark.gpuinfer(workload={...})` through pytester, on a fake NVML GPU."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes import nvml_specs

pytest_plugins = ["pytester"]

InstallNvml = Callable[[dict[str, Any] | None], None]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pytest_gpuinfer.tiny_models import write_tiny_model

    return write_tiny_model("llama", tmp_path_factory.mktemp("plugin") / "llama")


def one_gpu(free_gib: float) -> dict[str, Any]:
    return nvml_specs.machine(nvml_specs.gpu("NVIDIA A10", (8, 6), 24.0, free_gib=free_gib))


def write_tests(pytester: pytest.Pytester, model: Path) -> None:
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.gpuinfer(workload={{"model": {str(model)!r}, "batch_size": 2,
                                         "seq_len": 64, "new_tokens": 8}})
        def test_small():
            pass

        @pytest.mark.gpuinfer(workload={{"model": {str(model)!r}, "batch_size": 500000,
                                         "seq_len": 64, "new_tokens": 8}})
        def test_huge_batch():
            pass
        """
    )


def test_workload_that_does_not_fit_skips_with_figures(
    pytester: pytest.Pytester, fake_nvml: InstallNvml, model: Path
) -> None:
    fake_nvml(one_gpu(free_gib=20))
    write_tests(pytester, model)
    result = pytester.runpytest("-p", "no:randomly", "-rs", "--gpuinfer")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            f"SKIPPED [[]1[]] test_*.py:*: workload 500000 x 64 + 8 new tokens of {model} in "
            "fp16 needs * GiB at its prefill peak (weights *, kv cache * GiB, activations * "
            "cuda context 500.00 MiB); found 20.00 GiB free on GPU 0 NVIDIA A10 (8.6)"
        ]
    )


def test_a_full_gpu_skips_both_and_strict_fails_them(
    pytester: pytest.Pytester, fake_nvml: InstallNvml, model: Path
) -> None:
    fake_nvml(one_gpu(free_gib=0.25))  # less than the CUDA context alone
    write_tests(pytester, model)
    result = pytester.runpytest("-p", "no:randomly", "-rs", "--gpuinfer")
    result.assert_outcomes(skipped=2)
    strict = pytester.runpytest("-p", "no:randomly", "--gpuinfer", "--gpuinfer-strict")
    strict.assert_outcomes(errors=2)  # failed in setup, as unmet requirements do
    strict.stdout.fnmatch_lines(["*found 256.00 MiB free on GPU 0*--gpuinfer-strict*"])


def test_workload_in_the_tests_mode(
    pytester: pytest.Pytester, fake_nvml: InstallNvml, model: Path
) -> None:
    fake_nvml(one_gpu(free_gib=20))
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.gpuinfer(modes=["fp32", "nf4"],
                              workload={{"model": {str(model)!r}, "batch_size": 30000}})
        def test_modes():
            pass
        """
    )
    result = pytester.runpytest("-p", "no:randomly", "-rs", "--gpuinfer")
    output = result.stdout.str()
    # Judged in each of the mark's modes: fp32 needs more than nf4.
    assert "512 + 64 new tokens of" in output
    assert " in fp32 needs " in output and " in nf4 needs " in output


@pytest.mark.parametrize(
    ("workload", "fragment"),
    [
        ("{'batch_size': 2}", "has no 'model' path"),
        ("{'model': 'm', 'seq_len': 0}", "seq_len=0 is not a whole number >= 1"),
        ("{'model': 'm', 'batch': 2}", "unknown key 'batch'"),
        ("'m'", "is not a non-empty dict"),
    ],
)
def test_bad_workload_is_a_collection_error(
    pytester: pytest.Pytester, fake_nvml: InstallNvml, workload: str, fragment: str
) -> None:
    fake_nvml(one_gpu(free_gib=20))
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.gpuinfer(workload={workload})
        def test_bad():
            pass
        """
    )
    result = pytester.runpytest("-p", "no:randomly", "--gpuinfer")
    output = result.stdout.str()
    assert "Traceback" not in output
    assert "@pytest.mark.gpuinfer: workload=" in output and fragment in output


def test_missing_model_says_so(pytester: pytest.Pytester, fake_nvml: InstallNvml) -> None:
    fake_nvml(one_gpu(free_gib=20))
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.gpuinfer(workload={"model": "/nonexistent/model"})
        def test_missing():
            pass
        """
    )
    result = pytester.runpytest("-p", "no:randomly", "-rs", "--gpuinfer")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*workload={'model': '/nonexistent/model', ...}: model '/nonexistent/model' "
            "does not exist*"
        ]
    )

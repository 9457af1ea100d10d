"""The load_model and gpuinfer_model fixtures, run through pytester as a user would."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

# The report the tests judge (overriding the plugin's gpu_report): this machine without a
# GPU, with the int8 verdict made unsupported.
REPORT_FIXTURE = """
import pytest
from pytest_gpuinfer.probes.report import DriverInfo, Finding, Report, Status, Verdict
from pytest_gpuinfer.probes.rules import judge
from pytest_gpuinfer.probes.software import probe_software

MODELS = {models!r}
CHECKS = {checks!r}

@pytest.fixture(scope="session")
def gpu_report():
    software = probe_software()
    verdicts = judge([], software)
    reason = "int8 needs compute capability >= 7.5 with bitsandbytes 0.36.0; found Tesla P100 (6.0)"
    verdicts["int8"] = Verdict(
        "int8", Status.UNSUPPORTED, [Finding("test", Status.UNSUPPORTED, reason)], device="cpu"
    )
    return Report(gpus=[], driver=DriverInfo(), software=software, verdicts=verdicts)

def pytest_sessionfinish(session):
    cache = getattr(session.config, "_test_cache", None)
    if cache is not None:
        with open(CHECKS, "w") as out:
            out.write(f"entries={{len(cache)}} loads={{cache.loads}}")
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from pytest_gpuinfer.tiny_models import write_tiny_model

    root = tmp_path_factory.mktemp("fixture-models")
    return {
        "gpt2": str(write_tiny_model("gpt2", root / "gpt2")),
        "bert": str(write_tiny_model("bert", root / "bert", task="encoder")),
    }


class Runner:
    """Runs pytest in-process with the plugin enabled, in a pytester directory."""

    def __init__(self, pytester: pytest.Pytester) -> None:
        self.pytester = pytester
        self.checks = pytester.path / "checks.txt"

    def __call__(self, *args: str) -> pytest.RunResult:
        return self.pytester.runpytest_inprocess("--gpuinfer", "-p", "no:cacheprovider", *args)


@pytest.fixture
def run(pytester: pytest.Pytester, models: dict[str, str]) -> Runner:
    runner = Runner(pytester)
    pytester.makeconftest(REPORT_FIXTURE.format(models=models, checks=str(runner.checks)))
    return runner


def test_load_model_shares_one_load_across_tests(pytester: pytest.Pytester, run: Runner) -> None:
    pytester.makepyfile(
        """
        from conftest import MODELS

        SEEN = []

        def test_first(load_model, gpuinfer_model_cache, pytestconfig):
            pytestconfig._test_cache = gpuinfer_model_cache
            loaded = load_model(MODELS["gpt2"], "fp32")
            assert loaded.mode == "fp32" and len(loaded.devices) == 1
            SEEN.append(loaded.model)

        def test_second(load_model, gpuinfer_model_cache):
            loaded = load_model(MODELS["gpt2"], "fp32")
            assert loaded.model is SEEN[0]
            assert gpuinfer_model_cache.loads == 1

        def test_private(load_model):
            loaded = load_model(MODELS["gpt2"], "fp32", private=True)
            assert loaded.model is not SEEN[0]
        """
    )
    result = run("-v")
    result.assert_outcomes(passed=3)
    # The session's cache was cleared at teardown.
    assert run.checks.read_text() == "entries=0 loads=1"


def test_mode_defaults_to_inference_mode(pytester: pytest.Pytester, run: Runner) -> None:
    pytester.makepyfile(
        """
        import pytest
        from conftest import MODELS

        @pytest.mark.gpuinfer(modes=["fp32", "bf16"])
        def test_mode(load_model, inference_mode):
            loaded = load_model(MODELS["gpt2"])
            assert loaded.mode == inference_mode
            assert loaded.model.get_input_embeddings().weight.dtype.is_floating_point
        """
    )
    result = run("-v")
    result.assert_outcomes(passed=2)


def test_unavailable_mode_skips_with_the_rules_reason(
    pytester: pytest.Pytester, run: Runner
) -> None:
    pytester.makepyfile(
        """
        from conftest import MODELS

        def test_int8(load_model):
            load_model(MODELS["gpt2"], "int8")
            raise AssertionError("not reached")
        """
    )
    result = run("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        ["*SKIPPED*int8: int8 needs compute capability >= 7.5 with bitsandbytes 0.36.0*"]
    )


def test_unavailable_mode_fails_under_strict(pytester: pytest.Pytester, run: Runner) -> None:
    pytester.makepyfile(
        """
        from conftest import MODELS

        def test_int8(load_model):
            load_model(MODELS["gpt2"], "int8")
        """
    )
    result = run("--gpuinfer-strict")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*int8 needs compute capability >= 7.5*--gpuinfer-strict*"])


def test_bad_input_fails_only_that_test_without_traceback(
    pytester: pytest.Pytester,
    run: Runner,
) -> None:
    pytester.makepyfile(
        """
        from conftest import MODELS

        def test_bad_mode(load_model):
            load_model(MODELS["gpt2"], "int4")

        def test_missing(load_model, tmp_path):
            load_model(tmp_path / "nowhere", "fp32")

        def test_no_mode(load_model):
            load_model(MODELS["gpt2"])

        def test_fine(load_model):
            assert load_model(MODELS["gpt2"], "bf16").mode == "bf16"
        """
    )
    result = run()
    result.assert_outcomes(failed=3, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*load_model: unknown mode 'int4'; expected one of: fp32, fp16, bf16, int8, nf4, fast*",
            "*load_model: model path '*nowhere' does not exist",
            "*load_model: no mode given and the test does not use inference_mode*",
        ]
    )
    result.stdout.no_fnmatch_line("*Traceback*")
    result.stdout.no_fnmatch_line("*InputError*")


def test_gpuinfer_model_skips_when_none_is_configured(
    pytester: pytest.Pytester, run: Runner
) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.gpuinfer(modes=["fp32"])
        def test_model(gpuinfer_model):
            raise AssertionError("not reached")
        """
    )
    result = run("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*gpuinfer_model: no model configured; pass --gpuinfer-model*"])


def test_gpuinfer_model_loads_the_configured_model_in_each_mode(
    pytester: pytest.Pytester,
    run: Runner,
    models: dict[str, str],
) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.gpuinfer(modes=["fp32", "fastpath"])
        def test_model(gpuinfer_model, inference_mode):
            assert gpuinfer_model.mode == inference_mode
            assert gpuinfer_model.task == "feature-extraction"
            assert gpuinfer_model.tokenizer is not None
        """
    )
    result = run("-v", "--gpuinfer-model", models["bert"])
    result.assert_outcomes(passed=2)


def test_fixtures_module_imports_no_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, pytest_gpuinfer.plugin.fixtures, pytest_gpuinfer.loading;"
        "print(sorted(m for m in ('torch', 'transformers', 'bitsandbytes') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_dormant_plugin_skips_loading_fixtures_with_the_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_a(load_model):
            load_model("x", "fp32")

        def test_b(gpuinfer_model):
            pass
        """
    )
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*pytest-gpuinfer is not enabled: run pytest with --gpuinfer*"])


def test_enabled_plugin_uses_the_real_loading_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_a(load_model):
            load_model("/nonexistent/model", "fp32")
        """
    )
    result = pytester.runpytest("--gpuinfer")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*/nonexistent/model*"])
    assert "Traceback" not in result.stdout.str()

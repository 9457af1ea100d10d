"""Friction a new user met in the plugin: names that disagreed, messages that contradicted
the export, a warning from the bench fixture, options that silently did nothing."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from pytest_gpuinfer.tiny_models import trained_model_path

BASE = ("-p", "no:randomly", "-p", "no:cacheprovider")


def test_modes_explicit_is_the_bool_and_modes_selected_still_reads_with_a_warning(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import pytest

        def test_settings(gpuinfer_settings):
            assert gpuinfer_settings.modes == ("fp16", "int8")
            assert gpuinfer_settings.modes_explicit is True
            with pytest.warns(DeprecationWarning, match="modes_explicit"):
                assert gpuinfer_settings.modes_selected is True
            assert "modes_selected" not in gpuinfer_settings.to_dict()
        """
    )
    result = pytester.runpytest(*BASE, "--gpuinfer", "--gpuinfer-modes", "fp16,int8")
    result.assert_outcomes(passed=1)


def test_collect_only_export_and_summary_agree(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.gpuinfer(gpus=1)
        def test_marked():
            pass

        def test_modes(inference_mode):
            pass

        def test_plain():
            pass
        """
    )
    result = pytester.runpytest(*BASE, "--collect-only", "-q", "--gpuinfer-requirements", "r.json")
    assert result.ret == 0
    import json

    export = json.loads((pytester.path / "r.json").read_text())
    assert export["summary"]["gpu_tests"] == 7
    output = result.stdout.str()
    assert "no test used the gpuinfer marker" not in output
    result.stdout.fnmatch_lines(
        ["collect-only: 7 of the 8 collected tests are GPU tests (the gpuinfer marker or *"]
    )


def test_collect_only_without_an_export_counts_too(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_modes(inference_mode):\n    pass\n\ndef test_b():\n    pass\n")
    result = pytester.runpytest(*BASE, "--gpuinfer", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["collect-only: 6 of the 7 collected tests are GPU tests*"])


def test_bench_fixture_under_default_junitxml_warns_nothing_but_past_positions(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        f"""
        MODEL = {str(trained_model_path())!r}

        def test_bench(load_model, gpuinfer_bench):
            loaded = load_model(MODEL, "fp32", device_map="cpu")
            result = gpuinfer_bench(
                loaded, prompt_len=250, new_tokens=8, warmup=0, min_repetitions=2,
                min_seconds=0,
            )
            assert result.status == "measured"
        """
    )
    result = pytester.runpytest(*BASE, "--gpuinfer", "--junitxml=j.xml", "-W", "default")
    result.assert_outcomes(passed=1)
    output = result.stdout.str()
    assert "record_property is incompatible" not in output
    assert "PytestWarning" not in output
    result.stdout.fnmatch_lines(
        ["*gpuinfer_bench: seq_len + new_tokens = 258 is beyond the model's 256 positions*"]
    )
    tree = ET.parse(pytester.path / "j.xml")
    names = {p.get("name") for p in tree.iter("property")}
    # Under the default xunit2 a test's figures are suite properties named <nodeid>::<figure>.
    assert any(n is not None and n.endswith("::gpuinfer_bench.fp32.b1.status") for n in names), (
        names
    )


def test_share_without_workers_says_it_has_no_effect(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_a():\n    pass\n")
    result = pytester.runpytest(*BASE, "--gpuinfer-share", "2")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["*gpuinfer: command line --gpuinfer-share=2 has no effect without pytest-xdist workers*"]
    )


def test_a_misspelt_workload_model_is_named_before_the_missing_gpu(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.gpuinfer(workload={"model": "./no/such/model"})
        def test_marked():
            pass
        """
    )
    result = pytester.runpytest(*BASE, "--gpuinfer", "--gpuinfer-strict")
    result.assert_outcomes(errors=1)  # strict: the unmet requirement fails the setup
    result.stdout.fnmatch_lines(
        ["*workload={'model': './no/such/model', ...}: model './no/such/model' does not exist*"]
    )
    output = result.stdout.str()
    reason = next(line for line in output.splitlines() if "does not exist" in line)
    first = reason.index("does not exist")
    assert "found no GPU" not in reason or reason.index("found no GPU") > first

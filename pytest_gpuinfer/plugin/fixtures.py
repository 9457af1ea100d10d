"""Fixtures that load and measure models: ``load_model`` (a factory over a session cache),
``gpuinfer_model`` (the model configured with ``--gpuinfer-model``) and ``gpuinfer_bench``.

They rely on the plugin's ``gpu_report``, ``gpuinfer_settings`` and ``inference_mode``
fixtures. The enabled plugin registers this module for every run, so it imports loading
and bench only inside the fixtures: a suite that never loads a model never pays for them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import pytest

if TYPE_CHECKING:
    from pytest_gpuinfer import loading
    from pytest_gpuinfer.bench.record import ModeResult
    from pytest_gpuinfer.probes.memory_workload import Workload
    from pytest_gpuinfer.probes.report import Report


class LoadModel(Protocol):
    """The callable the ``load_model`` fixture returns: :func:`pytest_gpuinfer.loading.load_model`'s
    arguments, with ``mode`` defaulting to the test's ``inference_mode`` and ``private``."""

    def __call__(
        self,
        name_or_path: str | os.PathLike[str],
        mode: str | None = None,
        *,
        private: bool = False,
        **load_kwargs: Any,
    ) -> loading.LoadedModel: ...


def _strict(settings: object) -> bool:
    return bool(getattr(settings, "strict", False))


def _unavailable(error: loading.ModeUnavailable, report: Report, settings: object) -> NoReturn:
    __tracebackhide__ = True
    from pytest_gpuinfer.plugin import gating

    verdict = report.verdicts.get(error.mode)
    if report.simulated and report.profile is not None and verdict is not None and verdict.ok:
        # The requirements are met; the GPU only exists on paper. Never a failure.
        gating.would_run(report.profile)
    gating.unmet(f"{error.mode}: {error.reason}", strict=_strict(settings))


def _declared_workload(node: pytest.Item, name_or_path: str | os.PathLike[str]) -> Workload | None:
    """The marker's ``workload=`` sizes when it names the model being loaded."""
    from pathlib import Path

    from pytest_gpuinfer.plugin import requirements_of_node

    declared = requirements_of_node(node)
    if declared is None or declared.workload is None:
        return None
    try:
        same = Path(declared.workload.model).resolve() == Path(os.fspath(name_or_path)).resolve()
    except (OSError, TypeError):
        return None
    return declared.workload.sizes if same else None


@pytest.fixture(scope="session")
def gpuinfer_model_cache(gpu_report: Report) -> Iterator[loading.ModelCache]:
    """The session's model cache; cleared (memory freed) when the session ends."""
    from pytest_gpuinfer import loading

    cache = loading.ModelCache(gpu_report)
    yield cache
    cache.clear()


@pytest.fixture
def load_model(
    request: pytest.FixtureRequest,
    gpuinfer_model_cache: loading.ModelCache,
    gpuinfer_settings: object,
) -> LoadModel:
    """Factory: ``load_model(name_or_path, mode=None, *, private=False, **load_kwargs)
    -> LoadedModel``, where ``load_kwargs`` are :func:`pytest_gpuinfer.loading.load_model`'s.

    ``mode`` defaults to the test's ``inference_mode``. Loads are cached for the session
    (``private=True`` gives a copy the test may change). A mode this machine cannot run
    skips the test (fails it under ``--gpuinfer-strict``); a CUDA out-of-memory or bad
    input fails only this test.
    """
    from pytest_gpuinfer import loading
    from pytest_gpuinfer.probes.errors import InputError

    default_mode: str | None = None
    if "inference_mode" in request.fixturenames:
        default_mode = request.getfixturevalue("inference_mode")
    cache = gpuinfer_model_cache

    def load(
        name_or_path: str | os.PathLike[str],
        mode: str | None = None,
        *,
        private: bool = False,
        **load_kwargs: Any,
    ) -> loading.LoadedModel:
        __tracebackhide__ = True
        chosen = mode if mode is not None else default_mode
        if chosen is None:
            pytest.fail(
                "load_model: no mode given and the test does not use inference_mode; "
                "pass one of " + ", ".join(loading.MODES),
                pytrace=False,
            )
        if "workload" not in load_kwargs:
            declared = _declared_workload(request.node, name_or_path)
            if declared is not None:
                load_kwargs["workload"] = declared
        try:
            return cache.get(name_or_path, chosen, private=private, **load_kwargs)
        except loading.ModeUnavailable as error:
            assert cache.report is not None
            _unavailable(error, cache.report, gpuinfer_settings)
        except loading.WorkloadDoesNotFit as error:
            from pytest_gpuinfer.plugin import gating

            gating.unmet(str(error), strict=_strict(gpuinfer_settings))
        except loading.ModelLoadOOM as error:
            pytest.fail(str(error), pytrace=False)
        except InputError as error:
            pytest.fail(f"load_model: {error}", pytrace=False)

    return load


@pytest.fixture
def gpuinfer_model(
    load_model: LoadModel, inference_mode: str, gpuinfer_settings: object
) -> loading.LoadedModel:
    """The model named by ``--gpuinfer-model`` (ini ``gpuinfer_model``), loaded in the
    current ``inference_mode``; the task is read from its config."""
    __tracebackhide__ = True
    name = getattr(gpuinfer_settings, "model", None)
    if not name:
        pytest.skip(
            "gpuinfer_model: no model configured; pass --gpuinfer-model PATH or set "
            "gpuinfer_model in the ini file"
        )
    from pytest_gpuinfer.probes.errors import InputError
    from pytest_gpuinfer.probes.sources import infer_task

    try:
        task = infer_task(name)
    except InputError as error:
        pytest.fail(f"gpuinfer_model: {error}", pytrace=False)
    return load_model(name, inference_mode, task=task)


@pytest.fixture
def gpuinfer_bench(request: pytest.FixtureRequest, gpu_report: Report) -> Callable[..., ModeResult]:
    """Factory: ``gpuinfer_bench(loaded, *, batch_size=1, prompt_len=32, new_tokens=16,
    warmup=1, min_repetitions=5, min_seconds=1.0, max_spread=0.05, reference=None,
    check=True) -> ModeResult`` (:func:`pytest_gpuinfer.bench.fixture.bench_loaded` with
    this test's report and sinks).

    ``reference`` (an earlier result at the same workload) fills ``result.ratios``. A
    run that is not "measured" (out of memory) fails the test unless ``check=False``.

    The figures reach JUnit XML under every ``junit_family`` (see plugin/outputs.py): per
    test case under ``xunit1``, as ``<nodeid>::<figure>`` suite properties under the
    default ``xunit2``, without ``record_property``'s xunit2 warning.
    """
    from pytest_gpuinfer.bench.fixture import bench_call
    from pytest_gpuinfer.plugin.outputs import record_test_property

    def sink(name: str, value: object) -> None:
        record_test_property(request.node, name, value)
        if "benchmark" in request.fixturenames:
            extra = getattr(request.getfixturevalue("benchmark"), "extra_info", None)
            if isinstance(extra, dict):
                extra[name] = value

    def measure(*args: Any, **options: Any) -> ModeResult:
        __tracebackhide__ = True
        return bench_call(args, options, report=gpu_report, sink=sink)

    return measure

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _pytest import pytester as _pytester

FAKES_DIR = Path(__file__).parent / "fakes"


# pytester's in-process runs snapshot sys.modules and drop whatever a run imported. torch
# registers native operator libraries at import and cannot be imported twice in one
# process ("Only a single TORCH_LIBRARY ..."), so a torch submodule first imported inside
# such a run must survive it: the snapshot keeps these stacks' modules.
_NATIVE_STACKS = frozenset(
    {
        "torch",
        "transformers",
        "accelerate",
        "bitsandbytes",
        "safetensors",
        "tokenizers",
        "triton",
        "optimum",
        "numpy",
        "sympy",
        "huggingface_hub",
    }
)


class _KeepNativeStacks(_pytester.SysModulesSnapshot):
    def __init__(self, preserve: Callable[[str], bool] | None = None) -> None:
        def keep(name: str) -> bool:
            return name.partition(".")[0] in _NATIVE_STACKS or bool(preserve and preserve(name))

        super().__init__(preserve=keep)


_pytester.SysModulesSnapshot = _KeepNativeStacks  # type: ignore[misc]


def _drop_fake_pynvml() -> None:
    module = sys.modules.get("pynvml")
    if module is not None and Path(getattr(module, "__file__", "") or "").parent == FAKES_DIR:
        del sys.modules["pynvml"]


@pytest.fixture
def fake_nvml(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[dict[str, Any] | None], None]]:
    """``install(spec)``: make ``import pynvml`` give the fake NVML describing ``spec``.

    Works in this process and in subprocesses (pytester, xdist workers) through
    PYTHONPATH and GPUINFER_FAKE_NVML. ``install(None)`` is a machine without a driver.
    See tests/fakes/pynvml.py for the spec format, tests/fakes/nvml_specs.py for machines.
    """

    def install(spec: dict[str, Any] | None) -> None:
        monkeypatch.syspath_prepend(str(FAKES_DIR))
        pythonpath = os.environ.get("PYTHONPATH")
        monkeypatch.setenv(
            "PYTHONPATH",
            os.pathsep.join([str(FAKES_DIR), pythonpath] if pythonpath else [str(FAKES_DIR)]),
        )
        if spec is None:
            monkeypatch.delenv("GPUINFER_FAKE_NVML", raising=False)
        else:
            monkeypatch.setenv("GPUINFER_FAKE_NVML", json.dumps(spec))
        # A real pynvml imported earlier would shadow the fake; monkeypatch restores it.
        monkeypatch.delitem(sys.modules, "pynvml", raising=False)

    yield install
    # Runs before monkeypatch's undo, so a real pynvml cached before the test comes back.
    _drop_fake_pynvml()


# What the machine running this suite may have set, and what pytest-gpuinfer itself sets
# in xdist workers when the suite runs under `--gpuinfer -n N` on a GPU machine: tests
# describe their machine explicitly (fake NVML, profiles), so none of it may leak in.
# Every option's environment variable is read from the options table, so a new option
# is isolated without an edit here.
_MACHINE_ENVIRONMENT = (
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "PYTEST_XDIST_WORKER",
    "PYTEST_XDIST_WORKER_COUNT",
    "PYTEST_XDIST_TESTRUNUID",
    "GPUINFER_FAKE_NVML",
    "GPUINFER_SHARING_PASS",
)


@pytest.fixture(autouse=True)
def _isolated_machine_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_gpuinfer.plugin import options

    for name in (*_MACHINE_ENVIRONMENT, *(spec.env for spec in options.OPTIONS)):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _no_rewrite_warning_in_pytester_runs(request: pytest.FixtureRequest) -> None:
    """A run inside a test (pytester) may find this plugin imported already by the outer
    pytest, and then warns "Module already imported so cannot be rewritten;
    pytest_gpuinfer" in its warnings summary: seen on the GPU machine's suite (2026-12-03,
    pytest 9.1, an editable install), never on CI. That line is about the harness, not the
    plugin, and would break the tests that read the output for our module's name. Pytester
    clears PYTEST_ADDOPTS when it starts; this sets it after, so both in-process and
    subprocess runs filter that one warning."""
    if "pytester" not in request.fixturenames:
        return
    request.getfixturevalue("pytester")
    monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setenv("PYTEST_ADDOPTS", "-W ignore::pytest.PytestAssertRewriteWarning")

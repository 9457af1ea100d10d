"""The session's collection-time hooks: marks parsed once per test, ``inference_mode``
parametrized from the marker or ``--gpuinfer-modes``, each item's data (mode, requirements,
whether it is a GPU test), and the ``--gpuinfer-requirements`` export.

A mixin of :class:`pytest_gpuinfer.plugin.GpuinferSession`, so pluggy finds these hooks on
the registered session object.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_gpuinfer.plugin import options
    from pytest_gpuinfer.plugin.xdist_support import Assignment
    from pytest_gpuinfer.requirements.marker import Requirements

# Fixtures whose tests execute on the GPU: a simulated profile skips them once gated, and
# every test that uses one (directly or through another fixture) gets the gpuinfer mark,
# so `-m "not gpuinfer"` selects the CPU-only suite. gpu_report and gpuinfer_settings only
# read facts and stay out.
GPU_FIXTURES = frozenset(
    {"inference_mode", "load_model", "gpuinfer_model", "gpuinfer_model_cache", "gpuinfer_bench"}
)


class CollectionHooks:
    """Parsing, parametrizing and exporting; the session sets the attributes below."""

    config: pytest.Config
    settings: options.Settings
    assignment: Assignment | None
    workerid: str | None
    collected: tuple[int, int] | None
    _data_key: pytest.StashKey[dict[str, Any]]
    _parsed: dict[str, Requirements | str]

    def parsed(self, node: pytest.Item | Any) -> Requirements | str:
        """The node's marks parsed into Requirements, or the one-line error of a bad mark."""
        from pytest_gpuinfer.requirements.marker import RequirementError, parse

        marks = [(mark.args, mark.kwargs) for mark in node.iter_markers("gpuinfer")]
        # Suites repeat the same marks (module marks, shared aliases): parse each once.
        key = repr(marks)
        cached = self._parsed.get(key)
        if cached is None:
            try:
                cached = parse(marks)
            except RequirementError as exc:
                cached = str(exc)
            self._parsed[key] = cached
        return cached

    def requirements_of(self, node: pytest.Item | Any, nodeid: str) -> Requirements:
        parsed = self.parsed(node)
        if isinstance(parsed, str):
            pytest.fail(f"{nodeid}: @pytest.mark.gpuinfer: {parsed}", pytrace=False)
        return parsed

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        definition = metafunc.definition
        wants_mode = "inference_mode" in metafunc.fixturenames
        # A keyword lookup up the node chain is far cheaper than iter_markers; it can only
        # give false positives (a node named "gpuinfer"), which the full parse then settles.
        if not wants_mode and "gpuinfer" not in definition.keywords:
            return
        requirements = self.requirements_of(definition, definition.nodeid)
        if not wants_mode:
            return
        for mark in definition.iter_markers("parametrize"):
            names = mark.args[0] if mark.args else mark.kwargs.get("argnames", "")
            if isinstance(names, str):
                names = [n.strip() for n in names.split(",")]
            if "inference_mode" in names:
                return  # the test chose its modes itself
        settings = self.settings
        if requirements.modes:
            modes = [m for m in requirements.modes if m in settings.modes]
        else:
            modes = list(settings.modes)
        if not modes:
            source = settings.sources.get("modes", "--gpuinfer-modes")
            reason = (
                f"none of the test's modes ({', '.join(requirements.modes)}) is selected by "
                f"{source} ({','.join(settings.modes)})"
            )
            params = [pytest.param(None, id="no-mode", marks=pytest.mark.skip(reason=reason))]
        elif self.config.option.collectonly:
            # Nothing runs, so the modes' skip marks would never show: do not probe for them.
            params = [pytest.param(mode, id=mode) for mode in modes]
        else:
            # A mode this machine cannot run is judged at setup (CannotRun), not by a skip
            # mark, so that the report tells it from a test's own skip.
            params = [pytest.param(mode, id=mode) for mode in modes]
        metafunc.parametrize("inference_mode", params, indirect=True)

    def item_data(self, item: pytest.Item) -> dict[str, Any]:
        data = item.stash.get(self._data_key, None)
        if data is not None:
            return data
        parsed = self.parsed(item)
        if isinstance(parsed, str):
            requirements_data, marked = {}, True
        else:
            requirements_data, marked = parsed.to_dict(), parsed.marked
        callspec = getattr(item, "callspec", None)
        mode = callspec.params.get("inference_mode") if callspec is not None else None
        fixturenames = set(getattr(item, "fixturenames", ()))
        data = {
            "mode": mode,
            "requirements": requirements_data,
            "gpu_test": marked or bool(fixturenames & GPU_FIXTURES),
            "worker": self.workerid,
            "visible_devices": (
                self.assignment.visible_devices if self.assignment is not None else None
            ),
        }
        item.stash[self._data_key] = data
        return data

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        path = self.settings.requirements_path
        if path is None and self.config.option.collectonly and self.workerid is None:
            gpu_tests = sum(1 for item in session.items if self.item_data(item)["gpu_test"])
            self.collected = (len(session.items), gpu_tests)
        if path is None or self.workerid not in (None, "gw0"):
            return  # under xdist the controller does not collect: worker gw0 writes it
        from pytest_gpuinfer.fleet.export import CollectedTest, export
        from pytest_gpuinfer.plugin.reporting import write_json_atomically

        tests = []
        for item in session.items:
            data = self.item_data(item)
            try:
                requirements = self.requirements_of(item, item.nodeid)
            except pytest.fail.Exception:
                continue  # a bad marker: the test itself fails with the reason
            tests.append(CollectedTest(item.nodeid, data["mode"], requirements, data["gpu_test"]))
        self.collected = (len(session.items), sum(1 for t in tests if t.gpu_test))
        write_json_atomically(path, export(tests, modes=self.settings.modes))

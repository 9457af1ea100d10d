"""pytest-gpuinfer's hooks and fixtures.

Dormant unless enabled (``--gpuinfer``, ``GPUINFER=1`` or ini ``gpuinfer = true``): then it
only registers its marker, so ``--strict-markers`` runs never break, and its fixtures skip
with a hint. Enabled, it probes once in the controller (NVML, never CUDA) and registers a
``GpuinferSession`` that gates, parametrizes, reports and pins xdist workers.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

from pytest_gpuinfer.plugin import options
from pytest_gpuinfer.plugin.collection import GPU_FIXTURES, CollectionHooks

if TYPE_CHECKING:
    from pytest_gpuinfer.plugin.sharing import SharingPlan
    from pytest_gpuinfer.plugin.xdist_support import Assignment, SharingGuard
    from pytest_gpuinfer.probes.report import Report
    from pytest_gpuinfer.requirements.marker import Requirements

MARKER_LINE = (
    "gpuinfer(modes=[...], gpus=N, compute_capability='>=7.5', free_memory='8GiB', "
    "total_memory='24GiB', tensor_cores=['int8'], packages={'bitsandbytes': '>=0.45'}, "
    "workload={'model': PATH, 'batch_size': 8, 'seq_len': 2048, 'new_tokens': 64}): "
    "run the test only where these hold (pytest-gpuinfer); unmet: skip, or fail with "
    "--gpuinfer-strict"
)

NOT_ENABLED = (
    "pytest-gpuinfer is not enabled: run pytest with --gpuinfer "
    "(or set GPUINFER=1, or ini gpuinfer = true)"
)

_SESSION_KEY = pytest.StashKey["GpuinferSession"]()
_SETTINGS_KEY = pytest.StashKey[options.Settings]()
_PROBE_KEY = pytest.StashKey["tuple[options.Settings, Report]"]()
_PLAN_KEY = pytest.StashKey["SharingPlan | None"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser)


def _settings(config: pytest.Config) -> options.Settings:
    """The settings, resolved once per process (cached on the config)."""
    if _SETTINGS_KEY not in config.stash:
        config.stash[_SETTINGS_KEY] = options.resolve(config)
    return config.stash[_SETTINGS_KEY]


def _probe(config: pytest.Config) -> tuple[options.Settings, Report]:
    """The settings and the probe report, made once per process (cached on the config)."""
    cached = config.stash.get(_PROBE_KEY, None)
    if cached is not None:
        return cached
    settings = _settings(config)
    report = _probe_machine(settings)
    config.stash[_PROBE_KEY] = (settings, report)
    return settings, report


def _probe_machine(settings: options.Settings) -> Report:
    from pytest_gpuinfer.probes import probe
    from pytest_gpuinfer.probes.errors import InputError

    try:
        return probe(profile=settings.profile)
    except InputError as exc:
        source = settings.sources.get("profile", "--gpuinfer-profile")
        raise pytest.UsageError(f"gpuinfer: {source}={settings.profile!r}: {exc}") from None


# tryfirst: xdist's own impl (the CPU count) must not answer first, whatever order the
# entry points were loaded in.
@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    if not options.is_enabled(config):
        return None
    from pytest_gpuinfer.plugin.xdist_support import auto_num_workers

    return auto_num_workers(_probe(config)[1], _sharing_plan(config))


def _sharing_plan(config: pytest.Config) -> SharingPlan | None:
    """``--gpuinfer-share`` > 1 in a controller: the plan, made once (see sharing.py)."""
    if _PLAN_KEY in config.stash:
        return config.stash[_PLAN_KEY]
    from pytest_gpuinfer.plugin import sharing

    settings, report = _probe(config)
    plan = None
    if settings.share > 1 and not sharing.in_sharing_pass() and not config.option.collectonly:
        records, note = sharing.collect_records(
            config.invocation_params.args, config.invocation_params.dir, os.environ
        )
        if records is None:
            plan = sharing.SharingPlan(settings.share, 1, f"off: {note}")
        else:
            plan = sharing.plan_sharing(settings.share, records, report)
    config.stash[_PLAN_KEY] = plan
    return plan


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_LINE)
    if not options.is_enabled(config):
        ignored = options.ignored_flags_warning(config)
        if ignored is not None:
            config.issue_config_time_warning(pytest.PytestConfigWarning(ignored), stacklevel=2)
        return
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        session = _configure_worker(config, workerinput)
    else:
        settings = _settings(config)
        workers = _local_worker_count(config)
        distributing = bool(workers or config.getoption("tx", None))
        # A bad profile must stop the run now, and workers need the report to start; else
        # the machine is probed when something first asks (a --co -q run never does).
        eager = settings.profile is not None or distributing
        session = GpuinferSession(config, settings, _probe(config)[1] if eager else None)
        # Said for the command line only: an ini/environment default serves -n runs too.
        shared = settings.sources.get("share", "").startswith("command line")
        if settings.share > 1 and shared and not distributing:
            warning = pytest.PytestConfigWarning(options.share_ignored(settings))
            config.issue_config_time_warning(warning, stacklevel=2)
        if distributing:
            report = session.report
            from pytest_gpuinfer.plugin.xdist_support import XdistHooks, check_worker_count

            plan = _sharing_plan(config) if workers else None
            check_worker_count(plan, report, workers)
            hooks = XdistHooks(settings.to_dict(), report, plan)
            config.pluginmanager.register(hooks, "gpuinfer-xdist")
    config.stash[_SESSION_KEY] = session
    config.pluginmanager.register(session, "gpuinfer-session")
    _register_fixture_module(config)


def _configure_worker(config: pytest.Config, workerinput: dict[str, Any]) -> GpuinferSession:
    """Pin this xdist worker to its GPUs before anything can initialise CUDA."""
    from pytest_gpuinfer.plugin.xdist_support import pin_worker, sharing_guard, worker_setup

    setup = worker_setup(workerinput, os.environ)
    if setup.settings_data is not None:
        settings = options.Settings.from_dict(setup.settings_data)
    else:
        settings = options.resolve(config)
    report = setup.report if setup.report is not None else _probe_machine(settings)
    view, assignment = pin_worker(
        report, setup.assignment_index, setup.assignment_count, os.environ, setup.sharing
    )
    workerid = str(workerinput.get("workerid", "gw?"))
    session = GpuinferSession(config, settings, view, assignment=assignment, workerid=workerid)
    session.sharing_guard = sharing_guard(
        setup.sharing, report, assignment, setup.assignment_count, workerid
    )
    if session.sharing_guard is not None:
        config.pluginmanager.register(session.sharing_guard, "gpuinfer-sharing-guard")
    return session


def _register_fixture_module(config: pytest.Config) -> None:
    # The module is light: it imports loading and bench only inside the fixture bodies.
    name = "pytest_gpuinfer.plugin.fixtures"
    if not (config.pluginmanager.has_plugin(name) or config.pluginmanager.is_blocked(name)):
        config.pluginmanager.import_plugin(name)


def _local_worker_count(config: pytest.Config) -> int:
    """How many xdist workers this controller starts on this machine (0 without xdist)."""
    if getattr(config, "workerinput", None) is not None:
        return 0
    if config.getoption("dist", "no") == "no":
        return 0
    specs = config.getoption("tx", None) or []
    return sum(1 for spec in specs if str(spec).startswith("popen"))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # tryfirst: `-m` deselects in pytest's own modifyitems, which must see the mark. Done
    # dormant too: a CPU-only job need not enable the plugin to leave its GPU tests out.
    mark = pytest.mark.gpuinfer
    for item in items:
        names = getattr(item, "fixturenames", ())
        if not GPU_FIXTURES.isdisjoint(names) and item.get_closest_marker("gpuinfer") is None:
            item.add_marker(mark)


def _session(config: pytest.Config) -> GpuinferSession | None:
    return config.stash.get(_SESSION_KEY, None)


def requirements_of_node(node: pytest.Item) -> Requirements | None:
    """The requirements the session parsed for ``node``; None when dormant or the mark is bad
    (the test then fails with the mark's reason in setup)."""
    session = _session(node.config)
    parsed = session.parsed(node) if session is not None else None
    return None if isinstance(parsed, str) else parsed


class GpuinferSession(CollectionHooks):
    """The enabled plugin: one per process (controller or xdist worker); its collection
    hooks come from :class:`~pytest_gpuinfer.plugin.collection.CollectionHooks`."""

    def __init__(
        self,
        config: pytest.Config,
        settings: options.Settings,
        report: Report | None,
        *,
        assignment: Assignment | None = None,
        workerid: str | None = None,
    ) -> None:
        from pytest_gpuinfer.plugin.reporting import Recorder

        self.config = config
        self.settings = settings
        self._report = report
        self.assignment = assignment
        self.workerid = workerid
        self.recorder = Recorder()
        self.sharing_guard: SharingGuard | None = None
        self._data_key = pytest.StashKey[dict[str, Any]]()
        self._parsed: dict[str, Requirements | str] = {}
        self.collected: tuple[int, int] | None = None
        """(tests, GPU tests) at the end of collection, when the export counted them."""

    @property
    def report(self) -> Report:
        """The probe report this process gates by (probed on first use)."""
        if self._report is None:
            self._report = _probe(self.config)[1]
        return self._report

    @property
    def no_gpu_reason(self) -> str | None:
        if self.assignment is None or self.workerid is None:
            return None
        if self.assignment.visible_devices is None:
            return None  # no GPU in the session at all: the probe's own reason says why
        return f"xdist worker {self.workerid} {self.assignment.description}"

    # -- running ------------------------------------------------------------------------

    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        from pytest_gpuinfer.plugin.gating import unmet, would_run
        from pytest_gpuinfer.requirements.check import evaluate, mode_reason

        requirements = self.requirements_of(item, item.nodeid)
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        mode = params.get("inference_mode")
        if "inference_mode" in params and mode is None:
            return  # the "no-mode" parameter carries its own skip mark
        why = mode_reason(self.report, mode) if mode is not None else None
        if why:
            unmet(why, strict=self.settings.strict)  # the mode's rule alone, as it names it
        reasons = evaluate(requirements, self.report, mode=mode, no_gpu_reason=self.no_gpu_reason)
        if reasons:
            unmet("; ".join(reasons), strict=self.settings.strict)
        if self.sharing_guard is not None and self.item_data(item)["gpu_test"]:
            broken = self.sharing_guard.check(item.nodeid, requirements.declared_memory_bytes)
            if broken:
                pytest.fail(broken, pytrace=False)
        if self.report.simulated and self.item_data(item)["gpu_test"]:
            would_run(self.report.profile or "?")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, Any, None]:
        outcome = yield
        report = outcome.get_result()
        # Rides on the report through xdist's serialization (a worker's stash never does).
        data = self.item_data(item)
        from pytest_gpuinfer.plugin import outputs

        extra = outputs.report_extras(item, call)
        report.gpuinfer = {**data, **extra} if extra else data

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.workerid is not None:
            return
        data = getattr(report, "gpuinfer", None)
        if report.when == "call" and data and "junit_properties" in data:
            from pytest_gpuinfer.plugin.outputs import stamp_junit_test

            stamp_junit_test(self.config, report.nodeid, data)
        self.recorder.add(
            nodeid=report.nodeid,
            when=report.when,
            outcome=report.outcome,
            longrepr=report.longrepr,
            wasxfail=hasattr(report, "wasxfail"),
            data=data,
        )

    # -- reporting ----------------------------------------------------------------------

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        from pytest_gpuinfer.plugin.reporting import header_lines

        note = None
        workers = _local_worker_count(config)
        if workers:
            from pytest_gpuinfer.plugin.xdist_support import policy_line
            from pytest_gpuinfer.requirements.check import usable_gpus

            gpu_count = len(usable_gpus(self.report))
            plan = config.stash.get(_PLAN_KEY, None)
            if plan is not None and gpu_count:
                note = plan.header_line(gpu_count, workers)
            else:
                note = policy_line(gpu_count, workers)
        return header_lines(self.report, strict=self.settings.strict, worker_note=note)

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if self.workerid is not None:
            return  # the controller's view (all GPUs) is the one to show, not a worker's
        from pytest_gpuinfer.plugin.outputs import add_metadata, stamp_junit_suite

        # Both probe the machine (self.report) only if their output is being written.
        stamp_junit_suite(self.config, lambda: self.report)
        # pytest-html reads the metadata in its own (trylast) sessionstart, after this one.
        add_metadata(self.config, lambda: self.report)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        path, summary = self.settings.report_path, self.settings.summary_path
        if self.workerid is not None or (path is None and summary is None):
            return
        from pytest_gpuinfer.plugin.sharing import in_sharing_pass

        if in_sharing_pass():
            return
        from pytest_gpuinfer.plugin.reporting import json_report, write_json_atomically

        data = json_report(
            self.report, self.settings.to_dict(), self.recorder.records.values(), exitstatus
        )
        if path is not None:
            write_json_atomically(path, data)
        if summary is not None:
            from pytest_gpuinfer.plugin.outputs import append_summary

            append_summary(summary, self.report, data["machine"], self.recorder.records.values())

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.workerid is not None:
            return
        from pytest_gpuinfer.plugin.reporting import closing_lines

        # A profile is probed at configure; an unprobed machine is no simulated one.
        simulated = self.report.profile if self._report and self._report.simulated else None
        terminalreporter.write_sep("=", "gpuinfer summary")
        collected = (self.collected or (0, 0)) if self.config.option.collectonly else None
        for line in closing_lines(
            self.recorder.gated(), simulated, collected, self.settings.report_path
        ):
            terminalreporter.write_line(line)
        if self.settings.summary_path is not None:
            terminalreporter.write_line(
                f"gpuinfer summary appended to {self.settings.summary_path}"
            )

    @pytest.hookimpl(optionalhook=True)
    def pytest_benchmark_update_machine_info(
        self, config: pytest.Config, machine_info: dict[str, Any]
    ) -> None:
        from pytest_gpuinfer.plugin.reporting import machine_info as gpu_machine_info

        machine_info["gpuinfer"] = gpu_machine_info(self.report)


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def gpuinfer_settings(pytestconfig: pytest.Config) -> options.Settings:
    """The resolved pytest-gpuinfer settings (``enabled``, ``strict``, ``profile``, ...)."""
    session = _session(pytestconfig)
    if session is not None:
        return session.settings
    return options.resolve(pytestconfig)


@pytest.fixture(scope="session")
def gpu_report(pytestconfig: pytest.Config) -> Report:
    """The probe report this session gates by (this worker's GPUs under xdist)."""
    session = _session(pytestconfig)
    if session is None:
        pytest.skip(NOT_ENABLED)
    return session.report


@pytest.fixture
def inference_mode(request: pytest.FixtureRequest) -> str:
    """The mode this test instance runs in: parametrized from the marker or --gpuinfer-modes."""
    if hasattr(request, "param"):
        return str(request.param)
    if _session(request.config) is None:
        pytest.skip(NOT_ENABLED)
    pytest.fail(
        f"{request.node.nodeid}: inference_mode was requested dynamically; list it as a "
        "test argument so that pytest-gpuinfer can parametrize it",
        pytrace=False,
    )


# Stand-ins while the plugin is dormant, so a suite that uses the loading fixtures skips
# with the reason instead of "fixture not found". Enabled, pytest_gpuinfer.plugin.fixtures is
# registered after this module and its definitions take precedence.
@pytest.fixture
def load_model() -> None:
    """Loads a model in a mode (see pytest_gpuinfer.plugin.fixtures); needs --gpuinfer."""
    pytest.skip(NOT_ENABLED)


@pytest.fixture
def gpuinfer_model() -> None:
    """The --gpuinfer-model model in the current mode (see pytest_gpuinfer.plugin.fixtures)."""
    pytest.skip(NOT_ENABLED)


@pytest.fixture
def gpuinfer_bench() -> None:
    """Measures a loaded model as `gpuinfer bench` does (see pytest_gpuinfer.plugin.fixtures)."""
    pytest.skip(NOT_ENABLED)

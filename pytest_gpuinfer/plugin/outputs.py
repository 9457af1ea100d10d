"""Where the session's facts reach the tools teams already read: JUnit XML (under any
``junit_family``), pytest-metadata (so pytest-html's Environment table shows the GPU), and
a Markdown summary for ``$GITHUB_STEP_SUMMARY``.

JUnit: pytest's default family, ``xunit2``, allows ``<property>`` only on the
``<testsuite>``; ``record_property`` (per test case) warns there and writes XML outside
the schema. So the session's facts are suite properties (as ``record_testsuite_property``
writes them), and a test's own figures (``gpuinfer_bench``) are too, named
``<nodeid>::<figure>``; under ``xunit1``/``legacy`` they stay per test case.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_gpuinfer.plugin.reporting import TestRecord
    from pytest_gpuinfer.probes.report import Report

_TEST_PROPERTIES = pytest.StashKey[list[tuple[str, str]]]()


# -- per-test properties and skip kinds, carried on the report ----------------------------


def _junit_family(config: pytest.Config) -> str | None:
    """The JUnit family being written, or None without ``--junitxml``."""
    if not getattr(config.option, "xmlpath", None):
        return None
    return str(config.getini("junit_family") or "xunit2")


def record_test_property(item: pytest.Item, name: str, value: object) -> None:
    """One figure of this test for JUnit XML (and any reporter of ``user_properties``).

    Under ``xunit1``/``legacy``, or with no JUnit file, it joins the test's
    ``user_properties`` as ``record_property`` would. Under ``xunit2`` it rides on the
    test's report to the controller, which writes it as a suite property.
    """
    if _junit_family(item.config) in (None, "xunit1", "legacy"):
        item.user_properties.append((name, value))
    else:
        item.stash.setdefault(_TEST_PROPERTIES, []).append((name, str(value)))


def report_extras(item: pytest.Item, call: pytest.CallInfo[None]) -> dict[str, Any] | None:
    """What the report of this phase carries besides the item's data: the kind of the
    plugin's own skip, and (at the call) the test's figures bound for suite properties."""
    extra: dict[str, Any] = {}
    if call.excinfo is not None:
        from pytest_gpuinfer.plugin.gating import skip_kind

        kind = skip_kind(call.excinfo.value)
        if kind is not None:
            extra["skip_kind"] = kind
    if call.when == "call":
        figures = item.stash.get(_TEST_PROPERTIES, None)
        if figures:
            extra["junit_properties"] = list(figures)
    return extra or None


def _junit_xml(config: pytest.Config) -> Any:
    try:
        from _pytest.junitxml import xml_key
    except ImportError:  # pragma: no cover - junitxml is a builtin plugin
        return None
    return config.stash.get(xml_key, None)


def stamp_junit_suite(config: pytest.Config, report: Callable[[], Report]) -> None:
    """The hardware as suite properties (what ``record_testsuite_property`` writes).

    ``report`` is called only when a JUnit file is being written: the machine is probed
    on first use, and a run without ``--junitxml`` must not pay for it."""
    xml = _junit_xml(config)
    if xml is None:
        return
    from pytest_gpuinfer.plugin.reporting import hardware_properties

    for name, value in hardware_properties(report()):
        xml.add_global_property(name, value)


def stamp_junit_test(config: pytest.Config, nodeid: str, data: dict[str, Any] | None) -> None:
    """A test's figures (carried on its call report) as ``<nodeid>::<name>`` suite properties."""
    figures = (data or {}).get("junit_properties")
    if not figures:
        return
    xml = _junit_xml(config)
    if xml is None:
        return
    for name, value in figures:
        xml.add_global_property(f"{nodeid}::{name}", value)


# -- pytest-metadata ------------------------------------------------------------------------


def metadata_entries(report: Report) -> dict[str, Any]:
    """The entries pytest-html's Environment table shows: GPU, compute capability, driver,
    stack and each mode's verdict (one level of nesting, which the table renders)."""
    from pytest_gpuinfer.plugin.reporting import machine_identity
    from pytest_gpuinfer.probes.render import STACK_PACKAGES
    from pytest_gpuinfer.requirements.check import usable_gpus

    gpus = usable_gpus(report)
    summary = machine_identity(report)["gpu_summary"]
    if not gpus and report.gpu_unavailable_reason:
        summary = f"no GPU: {report.gpu_unavailable_reason}"
    if report.simulated:
        summary += f" (simulated profile {report.profile})"
    capabilities = dict.fromkeys(
        f"{gpu.compute_capability[0]}.{gpu.compute_capability[1]}"
        for gpu in gpus
        if gpu.compute_capability
    )
    driver = report.driver.driver_version or "none"
    if report.driver.cuda_driver_version:
        driver += f" (CUDA {report.driver.cuda_driver_version})"
    software = report.software
    stack: dict[str, str] = {"python": software.python}
    for package in STACK_PACKAGES:
        version = software.packages.get(package)
        if package == "torch" and version and software.torch_cuda:
            version += f" (CUDA {software.torch_cuda})"
        stack[package] = version or "not installed"
    return {
        "GPU": summary,
        "Compute capability": ", ".join(capabilities) or "none",
        "NVIDIA driver": driver,
        "GPU stack": stack,
        "Inference modes": {mode: v.status.value for mode, v in report.verdicts.items()},
    }


def add_metadata(config: pytest.Config, report: Callable[[], Report]) -> bool:
    """Add the entries to pytest-metadata's ``config.stash[metadata_key]`` when that plugin
    is active (its module is imported only then); entries a user set stay. True if added.

    ``report`` is called only then, and not in a ``--collect-only`` run (no results for a
    report to show, and collection must not probe the machine)."""
    if not config.pluginmanager.has_plugin("metadata") or config.option.collectonly:
        return False
    try:
        from pytest_metadata.plugin import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
            metadata_key,
        )
    except ImportError:  # pytest-metadata < 3 kept a config attribute instead
        return False
    metadata = config.stash.get(metadata_key, None)
    if metadata is None:
        return False
    for key, value in metadata_entries(report()).items():
        metadata.setdefault(key, value)
    return True


# -- the Markdown summary -------------------------------------------------------------------


def append_summary(
    path: Path,
    report: Report,
    machine: dict[str, Any],
    records: Iterable[TestRecord],
) -> None:
    """Append this run's Markdown summary to ``path`` (``$GITHUB_STEP_SUMMARY`` is appended
    to, step after step)."""
    from pytest_gpuinfer.fleet.markdown import markdown
    from pytest_gpuinfer.fleet.merge import Cell, Coverage, Machine

    records = list(records)
    gated = [r for r in records if r.gated]
    name = str(machine.get("name") or "this machine")
    who = Machine(name=name, source="this run", gpu_summary=str(machine.get("gpu_summary")))
    cells = {
        (r.nodeid, name): Cell(r.outcome or "not run", r.skip_reason, r.skip_kind) for r in gated
    }
    coverage = Coverage([who], [r.nodeid for r in gated], cells)
    others = len(records) - len(gated)
    note = (
        f"{others} other test{'s' if others != 1 else ''} (no gpuinfer marker or GPU fixture) "
        "not listed."
        if others
        else None
    )
    title = f"pytest-gpuinfer: {name}"
    if report.simulated:
        title += f" (simulated profile {report.profile})"
    text = markdown(coverage, None, title=title, note=note)
    with path.open("a", encoding="utf-8") as stream:
        stream.write(text)

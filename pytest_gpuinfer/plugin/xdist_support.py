"""One GPU (or one group of GPUs) per pytest-xdist worker.

Policy: the GPUs a session can see are split into disjoint groups of
``gpus // workers_on_this_host``; worker *k* on a host owns group *k* (``-n auto`` gives one
GPU each). With more workers than GPUs, workers share GPUs round-robin, one GPU each, and
the header says so. A test that asks for ``gpus=N`` runs only on a worker that owns at
least N GPUs; elsewhere it is skipped (failed under strict) with a reason naming the
worker and what it owns: it never runs on fewer GPUs than it asked for.

The controller probes once and ships its report, settings and sharing plan to the workers
through ``workerinput``; a worker on another host (``--tx ssh=...``) probes its own machine.
With ``--gpuinfer-share=N`` several workers may share a GPU; ``pytest_gpuinfer.plugin.sharing``
states that policy and :class:`SharingGuard` enforces it in each sharing worker.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_gpuinfer.plugin.sharing import SharingPlan
    from pytest_gpuinfer.probes.report import Report

WORKERINPUT_KEY = "gpuinfer"


@dataclass(frozen=True)
class Assignment:
    """What one worker owns: the positions (CUDA ordinals) it gets, and the variable value."""

    ordinals: tuple[int, ...]
    """Positions in the session's visible GPU list (its CUDA ordinals) this worker owns."""
    visible_devices: str | None
    """Value for CUDA_VISIBLE_DEVICES, or None to leave the variable alone (no GPU)."""
    description: str


def _outer_entries(outer: str | None) -> list[str]:
    if outer is None:
        return []
    return [entry.strip() for entry in outer.split(",") if entry.strip()]


def assign(
    outer_visible_devices: str | None,
    visible_gpus: Sequence[str],
    worker_index: int,
    worker_count: int,
    gpus_per_worker: int | None = None,
) -> Assignment:
    """Which of the session's GPUs a worker owns, and the CUDA_VISIBLE_DEVICES that pins it.

    ``visible_gpus`` identifies the GPUs the session sees, in CUDA ordinal order (UUIDs
    when known). Within an outer ``CUDA_VISIBLE_DEVICES`` the worker's value is made of the
    outer entries themselves, so it always names a subset of what the user allowed.
    ``gpus_per_worker`` defaults to ``max(1, len(visible_gpus) // worker_count)``.
    """
    count = len(visible_gpus)
    if worker_count < 1 or not 0 <= worker_index < worker_count:
        raise ValueError(f"worker index {worker_index} is not in range for {worker_count} workers")
    if count == 0:
        return Assignment((), None, "no GPU visible")
    per = gpus_per_worker if gpus_per_worker is not None else max(1, count // worker_count)
    if per < 1:
        raise ValueError(f"gpus_per_worker={per} is not >= 1")
    outer = _outer_entries(outer_visible_devices)
    # CUDA stops at the first invalid entry, so the visible GPUs are the leading entries.
    names = outer[:count] if len(outer) >= count else list(visible_gpus)
    if worker_count > count and gpus_per_worker is None:
        # More workers than GPUs: share round-robin (announced in the header), rather than
        # leave some workers without a GPU and make GPU tests skip by scheduling luck.
        ordinal = worker_index % count
        return Assignment(
            (ordinal,),
            names[ordinal],
            f"shares GPU {ordinal} of {count} with other workers ({worker_count} workers)",
        )
    start = worker_index * per
    if start + per > count:
        return Assignment(
            (),
            "",
            f"owns no GPU: {worker_count} workers for {count} GPU{'s' if count != 1 else ''} "
            f"at {per} per worker",
        )
    ordinals = tuple(range(start, start + per))
    described = ", ".join(str(o) for o in ordinals)
    return Assignment(
        ordinals,
        ",".join(names[o] for o in ordinals),
        f"owns GPU{'s' if per != 1 else ''} {described} of {count}",
    )


def policy_line(gpu_count: int, worker_count: int) -> str:
    """How ``worker_count`` workers split ``gpu_count`` GPUs, for the session header."""
    if gpu_count == 0:
        return f"xdist: {worker_count} workers, no GPU to pin"
    if worker_count > gpu_count:
        return (
            f"xdist: {worker_count} workers share {gpu_count} GPU"
            f"{'s' if gpu_count != 1 else ''} round-robin (use -n auto for one GPU each)"
        )
    per = gpu_count // worker_count
    unused = gpu_count - per * worker_count
    line = f"xdist: {worker_count} workers, {per} GPU{'s' if per != 1 else ''} each"
    if unused:
        line += f" ({unused} unused)"
    return line + f"; tests with gpus>{per} skip"


def worker_index(workerid: str) -> int:
    """``gw3`` -> 3."""
    match = re.fullmatch(r"\D*(\d+)", workerid)
    if match is None:
        raise ValueError(f"xdist worker id {workerid!r} has no number")
    return int(match.group(1))


def auto_num_workers(report: Report, plan: SharingPlan | None = None) -> int | None:
    """``-n auto``: one worker per visible GPU (the plan's count per GPU when sharing), or
    None (xdist's own choice) without GPUs."""
    from pytest_gpuinfer.requirements.check import usable_gpus

    count = len(usable_gpus(report))
    per = plan.workers_per_gpu if plan is not None else 1
    return count * per if count >= 1 else None


def worker_view(report: Report, assignment: Assignment, share_of_free: int | None = None) -> Report:
    """The report as a pinned worker sees it: only its GPUs, renumbered from 0.

    ``share_of_free`` (a GPU shared by several workers) caps each GPU's free memory at
    this worker's share, so that ``free_memory`` requirements judge the share.
    """
    from pytest_gpuinfer.probes.report import Report as ReportClass
    from pytest_gpuinfer.requirements.check import usable_gpus

    gpus = usable_gpus(report)
    owned = [
        replace(gpus[o], cuda_ordinal=i) for i, o in enumerate(assignment.ordinals) if o < len(gpus)
    ]
    if share_of_free is not None:
        owned = [
            replace(gpu, free_memory_bytes=min(gpu.free_memory_bytes, share_of_free))
            if gpu.free_memory_bytes is not None
            else gpu
            for gpu in owned
        ]
    view = ReportClass.from_dict(report.to_dict())
    view.gpus = owned
    if assignment.visible_devices is not None and not report.simulated:
        view.visible_devices = assignment.visible_devices
    return view


def _host_key(spec: Any) -> str:
    for attr in ("ssh", "socket", "vagrant_ssh"):
        value = getattr(spec, attr, None)
        if value:
            return f"{attr}={value}"
    return "local"


class XdistHooks:
    """Controller-side hooks, registered only when xdist is active and the plugin enabled."""

    def __init__(
        self, settings_data: dict[str, Any], report: Report, plan: SharingPlan | None = None
    ) -> None:
        self._payload: dict[str, Any] = {
            "settings": settings_data,
            "report": report.to_dict(),
            "host": socket.gethostname(),
            "sharing": None if plan is None else plan.to_dict(),
        }
        self._ranks: dict[str, int] = {}

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        key = _host_key(node.gateway.spec)
        rank = self._ranks.get(key, 0)
        self._ranks[key] = rank + 1
        try:
            specs = node.nodemanager.specs
            local_count = sum(1 for spec in specs if _host_key(spec) == key)
        except AttributeError:
            local_count = None
        payload = dict(self._payload, local_rank=rank, local_count=local_count)
        if key != "local":
            payload.pop("report")  # another machine: it probes its own GPUs
            payload.pop("sharing")  # planned from this machine's memory
        node.workerinput[WORKERINPUT_KEY] = json.dumps(payload)


@dataclass(frozen=True)
class WorkerSetup:
    settings_data: dict[str, Any] | None
    report: Report | None
    assignment_index: int
    assignment_count: int
    sharing: SharingPlan | None = None


def worker_setup(workerinput: Mapping[str, Any], environ: Mapping[str, str]) -> WorkerSetup:
    """What the controller sent this worker (or what xdist's environment says)."""
    from pytest_gpuinfer.probes.report import Report as ReportClass

    raw = workerinput.get(WORKERINPUT_KEY)
    payload: dict[str, Any] = json.loads(raw) if isinstance(raw, str) else {}
    workerid = str(workerinput.get("workerid") or environ.get("PYTEST_XDIST_WORKER", "gw0"))
    index = payload.get("local_rank")
    count = payload.get("local_count")
    if index is None:
        index = worker_index(workerid)
    if count is None:
        count = int(workerinput.get("workercount") or environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    report = None
    sharing = None
    if "report" in payload and payload.get("host") == socket.gethostname():
        report = ReportClass.from_dict(payload["report"])
        if payload.get("sharing"):
            from pytest_gpuinfer.plugin.sharing import SharingPlan as PlanClass

            sharing = PlanClass.from_dict(payload["sharing"])
    return WorkerSetup(payload.get("settings"), report, int(index), max(1, int(count)), sharing)


def pin_worker(
    report: Report,
    index: int,
    count: int,
    environ: os._Environ[str] | dict[str, str],
    plan: SharingPlan | None = None,
) -> tuple[Report, Assignment]:
    """Set CUDA_VISIBLE_DEVICES for this worker (real GPUs only) and return its view."""
    from pytest_gpuinfer.plugin.sharing import workers_on_each_gpu
    from pytest_gpuinfer.requirements.check import usable_gpus

    gpus = usable_gpus(report)
    identifiers = [gpu.uuid or str(gpu.cuda_ordinal) for gpu in gpus]
    assignment = assign(report.visible_devices, identifiers, index % count, count)
    if assignment.visible_devices is not None and not report.simulated:
        environ["CUDA_VISIBLE_DEVICES"] = assignment.visible_devices
    share = None
    if plan is not None and plan.sharing and plan.usable_bytes is not None and assignment.ordinals:
        together = workers_on_each_gpu(len(gpus), count)[assignment.ordinals[0]]
        if together > 1:
            share = plan.usable_bytes // together
    return worker_view(report, assignment, share), assignment


class SharingGuard:
    """In a worker that shares its GPU: hold every GPU test to the plan, and keep what the
    worker holds between tests within its idle allowance."""

    def __init__(self, plan: SharingPlan, workers_on_gpu: int, workerid: str) -> None:
        self.plan = plan
        self.workers_on_gpu = workers_on_gpu
        self.workerid = workerid
        self.over: str | None = None
        """Set when shedding memory failed: the next GPU test fails with it."""
        self._model_cache: Any = None

    def check(self, nodeid: str, declared_bytes: int | None) -> str | None:
        """Why a GPU test about to run breaks the plan, or None."""
        from pytest_gpuinfer.probes.memory_units import format_bytes

        where = (
            f"xdist worker {self.workerid} shares its GPU with {self.workers_on_gpu - 1} other "
            f"worker{'s' if self.workers_on_gpu != 2 else ''} (--gpuinfer-share)"
        )
        if self.over is not None:
            return f"{where}: {self.over}"
        limit = self.plan.max_need_bytes
        if declared_bytes is None:
            return (
                f"{where}, and {nodeid} declares no memory (free_memory= or total_memory=): "
                "the collection differs from the one the sharing plan was made from"
            )
        if limit is not None and declared_bytes > limit:
            return (
                f"{where}, and {nodeid} declares {format_bytes(declared_bytes)}, more than "
                f"the plan's {format_bytes(limit)}: the collection differs from the plan's"
            )
        return None

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Any:
        funcargs = getattr(item, "funcargs", None) or {}
        if "gpuinfer_model_cache" in funcargs:
            self._model_cache = funcargs["gpuinfer_model_cache"]
        yield
        self.shed_memory()

    def shed_memory(self) -> None:
        from pytest_gpuinfer.loading.gpu_memory import release_memory
        from pytest_gpuinfer.plugin.sharing import over_allowance, torch_reserved_bytes
        from pytest_gpuinfer.probes.memory_units import format_bytes

        reserved = torch_reserved_bytes()
        if reserved is None:
            return
        over, allowance = over_allowance(reserved, self.plan, self.workers_on_gpu)
        if not over or allowance is None:
            return
        if self._model_cache is not None:
            self._model_cache.clear()
        release_memory()  # torch is loaded and CUDA initialised: reserved was read
        reserved = torch_reserved_bytes() or 0
        if reserved > allowance:
            self.over = (
                f"it still holds {format_bytes(reserved)} of CUDA memory after releasing its "
                f"model cache, over its idle allowance of {format_bytes(max(0, allowance))} "
                "(a test keeps GPU tensors alive)"
            )


def check_worker_count(plan: SharingPlan | None, report: Report, workers: int) -> None:
    """A pytest.UsageError when ``-n`` starts more workers than the plan lets share a GPU."""
    from pytest_gpuinfer.plugin.sharing import too_many_workers
    from pytest_gpuinfer.requirements.check import usable_gpus

    if plan is not None:
        error = too_many_workers(plan, len(usable_gpus(report)), workers)
        if error:
            raise pytest.UsageError(error)


def sharing_guard(
    plan: SharingPlan | None,
    report: Report,
    assignment: Assignment,
    worker_count: int,
    workerid: str,
) -> SharingGuard | None:
    """The guard of a worker that shares its GPU with others under the plan, else None."""
    from pytest_gpuinfer.plugin.sharing import workers_on_each_gpu
    from pytest_gpuinfer.requirements.check import usable_gpus

    if plan is None or not plan.sharing or not assignment.ordinals:
        return None
    together = workers_on_each_gpu(len(usable_gpus(report)), worker_count)
    count = together[assignment.ordinals[0]]
    return SharingGuard(plan, count, workerid) if count > 1 else None

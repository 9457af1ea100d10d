"""How many xdist workers may share one GPU, decided from the memory the tests declare.

Policy (``--gpuinfer-share=N``, default 1 = one GPU per worker):

* Before the workers start, the controller collects the suite once (a ``--collect-only``
  child with the same arguments) and reads every GPU test's declared need
  (``Requirements.declared_memory_bytes``: the marker's ``free_memory``/``total_memory``).
  Only tests that would run on a one-GPU worker here count (a ``gpus=2`` test or an
  unsupported mode skips under sharing anyway).
* ``k = min(N, floor(usable / (max_need + WORKER_RESERVE_BYTES)))`` on the smallest GPU,
  with ``usable = free - HEADROOM_FRACTION * total``. Any GPU test that would run and
  declares nothing forces ``k = 1``. ``-n auto`` starts ``k`` workers per GPU.
* So at most ``k`` tests run at once on a GPU, each within ``max_need``, each worker's CUDA
  context within the reserve: ``k * (max_need + reserve) <= usable``. A worker keeps what
  it caches between tests only within its idle allowance (its share minus one test);
  above it, it drops its model cache, and a worker still above fails its next GPU test
  with the reason rather than risk an OOM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_gpuinfer.probes.report import GPUInfo, Report

GiB = 2**30
WORKER_RESERVE_BYTES = 1 * GiB
"""Per worker on a GPU: its CUDA context and allocator slack, which no test declares."""
HEADROOM_FRACTION = 0.10
"""Of each GPU's total memory, left unplanned (fragmentation, other processes' growth)."""
SHARING_PASS_ENV = "GPUINFER_SHARING_PASS"
"""Set in the collection child, so that it neither plans again nor writes reports."""


@dataclass(frozen=True)
class SharingPlan:
    """How many workers share each GPU, and why."""

    requested: int
    workers_per_gpu: int
    reason: str
    max_need_bytes: int | None = None
    usable_bytes: int | None = None
    reserve_bytes: int = WORKER_RESERVE_BYTES
    counted_tests: int = 0
    """GPU tests that would run here and so set ``max_need_bytes``."""

    @property
    def sharing(self) -> bool:
        return self.workers_per_gpu > 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SharingPlan:
        return cls(**dict(data))

    def header_line(self, gpu_count: int, worker_count: int) -> str:
        """The policy, stated in the session header."""
        per = workers_on_each_gpu(gpu_count, worker_count)
        spread = "/".join(str(n) for n in sorted(set(per), reverse=True)) or "0"
        return (
            f"xdist: {worker_count} worker{'s' if worker_count != 1 else ''} on {gpu_count} "
            f"GPU{'s' if gpu_count != 1 else ''}, "
            f"{spread} per GPU; sharing by declared memory (--gpuinfer-share={self.requested}): "
            f"{self.reason}"
        )

    def idle_allowance_bytes(self, workers_on_gpu: int) -> int | None:
        """What a worker may keep on its GPU between tests: its share minus one test."""
        if self.usable_bytes is None or self.max_need_bytes is None or workers_on_gpu < 1:
            return None
        share = self.usable_bytes // workers_on_gpu
        return share - (self.max_need_bytes + self.reserve_bytes)


def usable_bytes(gpu: GPUInfo) -> int | None:
    """Free memory less the headroom; None when NVML could not read it."""
    if gpu.free_memory_bytes is None or gpu.total_memory_bytes is None:
        return None
    return max(0, gpu.free_memory_bytes - int(HEADROOM_FRACTION * gpu.total_memory_bytes))


def workers_on_each_gpu(gpu_count: int, worker_count: int) -> list[int]:
    """Round-robin: worker i on GPU i % gpu_count; how many land on each GPU."""
    if gpu_count < 1:
        return []
    return [len(range(g, worker_count, gpu_count)) for g in range(gpu_count)]


def _format(size: int | None) -> str:
    from pytest_gpuinfer.probes.memory_units import format_bytes

    return "unknown" if size is None else format_bytes(size)


def _one_gpu_views(report: Report) -> list[Report]:
    from pytest_gpuinfer.probes.report import Report as ReportClass
    from pytest_gpuinfer.requirements.check import usable_gpus

    views = []
    base = report.to_dict()
    for gpu in usable_gpus(report):
        view = ReportClass.from_dict(base)
        view.gpus = [replace(gpu, cuda_ordinal=0)]
        views.append(view)
    return views


def plan_sharing(
    requested: int, records: Iterable[Mapping[str, Any]], report: Report
) -> SharingPlan:
    """The plan for ``requested`` workers per GPU, from exported test records."""
    from pytest_gpuinfer.fleet.export import requirements_of_record
    from pytest_gpuinfer.requirements.check import evaluate, usable_gpus

    if requested <= 1:
        return SharingPlan(requested, 1, "off (one GPU per worker)")
    gpus = usable_gpus(report)
    if not gpus:
        return SharingPlan(requested, 1, "no GPU to share")
    sizes = [usable_bytes(gpu) for gpu in gpus]
    if any(size is None for size in sizes):
        return SharingPlan(requested, 1, "off: a GPU's free memory is unknown")
    usable = min(s for s in sizes if s is not None)
    views = _one_gpu_views(report)
    needs: list[int] = []
    undeclared: list[str] = []
    for record in records:
        if not record.get("gpu_test"):
            continue
        requirements = requirements_of_record(record)
        mode = record.get("mode")
        if not any(not evaluate(requirements, view, mode=mode) for view in views):
            continue  # skips on every one-GPU worker: it uses no memory
        need = record.get("memory_need_bytes")
        if need is None:
            undeclared.append(str(record["nodeid"]))
        else:
            needs.append(int(need))
    if undeclared:
        more = f" and {len(undeclared) - 1} more" if len(undeclared) > 1 else ""
        return SharingPlan(
            requested,
            1,
            f"off: GPU test {undeclared[0]}{more} declares no memory "
            "(free_memory= or total_memory=)",
            usable_bytes=usable,
        )
    if not needs:
        return SharingPlan(
            requested, requested, "no GPU test runs here", usable_bytes=usable, counted_tests=0
        )
    need = max(needs)
    fits = usable // (need + WORKER_RESERVE_BYTES)
    workers = max(1, min(requested, fits))
    reason = (
        f"largest need {_format(need)} + {_format(WORKER_RESERVE_BYTES)} per worker; "
        f"{workers} x {_format(need + WORKER_RESERVE_BYTES)} <= {_format(usable)} usable"
    )
    if fits < 1:
        reason = (
            f"off: largest need {_format(need)} + {_format(WORKER_RESERVE_BYTES)} exceeds "
            f"{_format(usable)} usable"
        )
    return SharingPlan(
        requested,
        workers,
        reason,
        max_need_bytes=need,
        usable_bytes=usable,
        counted_tests=len(needs),
    )


def too_many_workers(plan: SharingPlan, gpu_count: int, worker_count: int) -> str | None:
    """Why ``worker_count`` workers break the plan (a usage error), or None."""
    if plan.requested <= 1 or gpu_count < 1:
        return None
    limit = gpu_count * plan.workers_per_gpu
    if worker_count <= limit:
        return None
    return (
        f"gpuinfer: {worker_count} xdist workers on {gpu_count} GPU"
        f"{'s' if gpu_count != 1 else ''} would put more than {plan.workers_per_gpu} on a GPU; "
        f"the declared memory allows {limit} ({plan.reason}): use -n auto or -n {limit}"
    )


def collection_args(args: Sequence[str], export_path: Path) -> list[str]:
    """The child's command line: the same arguments, collect-only, writing the export."""
    return [
        *args,
        "--collect-only",
        "-q",
        "-p",
        "no:cacheprovider",
        "--gpuinfer-requirements",
        str(export_path),
    ]


def collect_records(
    args: Sequence[str], cwd: Path, environ: Mapping[str, str]
) -> tuple[list[dict[str, Any]] | None, str]:
    """Collect the suite once in a child pytest; (records, "") or (None, why not)."""
    with tempfile.TemporaryDirectory(prefix="gpuinfer-share-") as directory:
        export_path = Path(directory) / "requirements.json"
        command = [sys.executable, "-m", "pytest", *collection_args(args, export_path)]
        env = dict(environ, **{SHARING_PASS_ENV: "1"})
        started = time.perf_counter()
        done = subprocess.run(
            command, cwd=cwd, env=env, capture_output=True, text=True, check=False
        )
        seconds = time.perf_counter() - started
        if done.returncode not in (0, 5) or not export_path.exists():
            tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
            return None, f"the collection pass exited {done.returncode} ({tail[0]})"
        data = json.loads(export_path.read_text(encoding="utf-8"))
    records = list(data.get("tests", []))
    return records, f"collected {len(records)} tests in {seconds:.1f}s"


def in_sharing_pass(environ: Mapping[str, str] | None = None) -> bool:
    return (environ if environ is not None else os.environ).get(SHARING_PASS_ENV) == "1"


def over_allowance(
    reserved_bytes: int, plan: SharingPlan, workers_on_gpu: int
) -> tuple[bool, int | None]:
    """Whether a worker holding ``reserved_bytes`` between tests must shed memory."""
    allowance = plan.idle_allowance_bytes(workers_on_gpu)
    if allowance is None:
        return False, None
    return reserved_bytes > allowance, allowance


def torch_reserved_bytes() -> int | None:
    """This process's reserved CUDA memory, when torch already initialised CUDA here."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_initialized():
            return None
        return int(sum(torch.cuda.memory_reserved(d) for d in range(torch.cuda.device_count())))
    except Exception:  # a broken CUDA state is for the test itself to report
        return None

"""Plain-text renderings of a Report, shared by the CLI and the pytest header."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from pytest_gpuinfer.probes.architectures import tensor_core_precisions
from pytest_gpuinfer.probes.memory_units import format_bytes
from pytest_gpuinfer.probes.report import GPUInfo, Report, SoftwareStack, Status, Verdict
from pytest_gpuinfer.probes.rule import short_source
from pytest_gpuinfer.probes.rules_bnb import BNB_CPU_BACKEND_FROM

if TYPE_CHECKING:
    from pytest_gpuinfer.probes.memory_fit import MemoryFit

STACK_PACKAGES = ("torch", "transformers", "accelerate", "bitsandbytes", "optimum", "flash-attn")
"""The packages the header and the audit name, in this order."""


def gpu_line(gpu: GPUInfo, *, detail: bool = True) -> str:
    """ "GPU 0: NVIDIA H100 80GB HBM3, cc 9.0, 79.18 GiB free of 79.65 GiB".

    ``detail`` adds the architecture and tensor-core precisions (the audit's table); the
    pytest header leaves them out.
    """
    ordinal = gpu.cuda_ordinal if gpu.cuda_ordinal is not None else gpu.index
    parts = [f"GPU {ordinal}: {gpu.name or 'unknown GPU'}"]
    if gpu.compute_capability is None:
        why = gpu.unknown.get("compute_capability")
        parts.append(f"cc unknown ({why})" if detail and why else "cc unknown")
    else:
        major, minor = gpu.compute_capability
        if detail:
            cores = tensor_core_precisions(gpu.compute_capability, gpu.name)
            parts.append(f"cc {major}.{minor} {gpu.architecture or ''}".rstrip())
            parts.append("tensor cores: " + (" ".join(cores) if cores else "none"))
        else:
            parts.append(f"cc {major}.{minor}")
    free, total = gpu.free_memory_bytes, gpu.total_memory_bytes
    if free is not None and total is not None:
        parts.append(f"{format_bytes(free)} free of {format_bytes(total)}")
    elif total is not None:
        parts.append(f"free memory unknown of {format_bytes(total)}")
    else:
        parts.append("memory unknown")
    if detail and gpu.mig_mode:
        parts.append("MIG on")
    if detail and "lost" in " ".join(gpu.unknown.values()).lower():
        parts.append("GPU LOST")
    return ", ".join(parts)


def stack_line(software: SoftwareStack, driver_version: str | None = None) -> str:
    """The stack in one line: "python 3.12.3, torch 2.11.0 (CUDA 13.0), ..., driver 580"."""
    parts = [f"python {software.python}"]
    for name in STACK_PACKAGES:
        version = software.packages.get(name)
        if version is None and name == "flash-attn":
            continue  # optional, and rare: named only when installed
        text = f"{name} {version}" if version else f"{name} not installed"
        if name == "torch" and version:
            if software.torch_cuda:
                text += f" (CUDA {software.torch_cuda})"
            elif software.torch_hip:
                text += f" (ROCm {software.torch_hip})"
            elif software.assumed_torch_build:
                text += " (CUDA build assumed)"
            else:
                text += " (CPU build)"
        if name in software.overridden:
            text += " [profile]"
        parts.append(text)
    if driver_version:
        parts.append(f"driver {driver_version}")
    return ", ".join(parts)


def machine_lines(report: Report) -> list[str]:
    """Where the verdicts apply: the GPUs, or why there are none."""
    lines: list[str] = []
    if report.simulated:
        lines.append(f"SIMULATED profile {report.profile!r}: judged as that hardware, not this one")
    if report.platform != "x86_64":
        lines.append(f"platform: {report.platform}")
    if report.gpus:
        lines.extend(gpu_line(gpu) for gpu in report.gpus)
    else:
        why = report.gpu_unavailable_reason or "no GPU visible"
        lines.append(f"no GPU: {why}; judging the CPU")
    lines.extend(f"warning: {w}" for w in report.warnings)
    lines.extend(f"note: {n}" for n in report.notes)
    if not report.simulated and report.driver.driver_version:
        cuda = report.driver.cuda_driver_version or "?"
        lines.append(f"driver {report.driver.driver_version} (CUDA {cuda})")
    return lines


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width=width) or [""]


def reason_lines(verdict: Verdict) -> list[str]:
    """The deciding findings' messages, each "no" ending with a short source in brackets."""
    ordered = sorted(verdict.findings, key=lambda f: -f.status.rank)
    deciding = [f for f in ordered if f.status is not Status.SUPPORTED] or ordered
    return [
        f"{f.message} [{short_source(f.source)}]"
        if f.source and f.status is not Status.SUPPORTED
        else f.message
        for f in deciding
    ]


def verdict_table(verdicts: Sequence[Verdict], *, width: int = 100) -> list[str]:
    header = f"{'mode':<9}{'verdict':<13}reason"
    lines = [header, "-" * min(width, 100)]
    reason_width = max(40, width - 22)
    for verdict in verdicts:
        status = verdict.status.value + ("*" if verdict.verified else "")
        reasons = reason_lines(verdict)
        if verdict.resolves_to:
            reasons.append(f"loads as {verdict.resolves_to}")
        if verdict.assumptions:
            reasons.append("assumes: " + "; ".join(verdict.assumptions))
        first = True
        for reason in reasons:
            for chunk in _wrap(reason, reason_width):
                prefix = f"{verdict.mode:<9}{status:<13}" if first else " " * 22
                lines.append(prefix + chunk)
                first = False
    return lines


def audit_text(report: Report, *, width: int = 100) -> str:
    title = "gpuinfer audit"
    lines = [title, "=" * len(title), *machine_lines(report), stack_line(report.software), ""]
    lines.extend(verdict_table(list(report.verdicts.values()), width=width))
    native = report.software.bitsandbytes_native
    if native.state != "not-run":
        cached = " (cached)" if native.cached else ""
        lines.append(
            f"* verified: bitsandbytes int8 matmul {native.state}{cached}: {native.detail}"
        )
    elif "int8" in report.verdicts or "nf4" in report.verdicts:
        lines.append(
            "int8/nf4 verdicts are inferred from versions; --verify runs a real int8 matmul"
        )
    if not report.gpus and not report.simulated:
        lines.append(
            "Without a GPU, fp32/bf16, SDPA and bitsandbytes int8 "
            f"(>= {BNB_CPU_BACKEND_FROM}) still run on the CPU; "
            "try --profile t4 (see `gpuinfer profiles`) to judge a GPU you do not have."
        )
    return "\n".join(lines)


def memory_fit_lines(
    fit: MemoryFit,
    *,
    judged: bool = True,
    width: int = 100,
    verdicts: Mapping[str, Status] | None = None,
) -> list[str]:
    """The memory-fit table: per mode the predicted peak, its parts, where it fits.

    ``judged=False`` (no GPU here) prints the predictions without fit verdicts.
    ``verdicts`` (the audit's mode verdicts): a mode that cannot run, or whose verdict is
    unknown, is never called "supported" for fitting; the line says it fits in memory
    and why that does not make it run.
    """
    estimate = fit.estimate
    millions = estimate.parameter_count / 1e6
    how = {
        "safetensors-header": "safetensors headers",
        "config": "its config, no weights",
    }.get(estimate.read_from, "a meta-device build")
    work = fit.workload
    lines = [
        f"memory fit for {estimate.source} ({estimate.model_type}, {millions:,.1f}M "
        f"parameters; read from {how})",
        f"workload: generate() on batch {work.batch_size} x {work.seq_len} prompt tokens "
        f"+ {work.new_tokens} new tokens",
    ]
    lines.extend(f"warning: {w}" for w in fit.warnings)
    columns = ("weights", "KV cache", "activ.", "bnb buf", "allocator", "context", "peak")
    lines.append(f"{'mode':<9}" + "".join(f"{c:>11}" for c in columns))
    lines.append("-" * min(width, 100))
    for mode, row in zip(fit.fits, fit.rows(), strict=True):
        mode_fit = fit.fits[mode]
        predicted = mode_fit.workload
        if predicted is not None:
            parts = predicted.parts()
            values = [
                parts["weights"],
                parts["kv_cache"],
                parts["activations"] + parts["logits"],
                parts["quantization_buffers"],
                parts["allocator"],
                parts["cuda_context"],
                predicted.peak_bytes,
            ]
            cells = "".join(f"{format_bytes(v):>11}" for v in values)
        else:
            cells = f"{format_bytes(mode_fit.weights_bytes):>11}" + f"{'?':>11}" * 5
            cells += f"{format_bytes(mode_fit.needed_bytes):>11}"
        lines.append(f"{mode:<9}{cells}")
        if judged:
            head = f"{mode_fit.status.value}: {row[2]}"
            runs = None if verdicts is None else verdicts.get(mode)
            if runs in (Status.UNSUPPORTED, Status.UNKNOWN) and mode_fit.status in (
                Status.SUPPORTED,
                Status.DEGRADED,
            ):
                word = "cannot run here" if runs is Status.UNSUPPORTED else "may not run here"
                head = (
                    f"fits in memory ({row[2]}), but {mode} {word}: its verdict above is "
                    f"{runs.value}"
                )
            lines.extend(" " * 9 + chunk for chunk in _wrap(head, width - 9))
            lines.extend(" " * 9 + chunk for chunk in _wrap(row[3], width - 9))
    if not judged:
        lines.append(
            "no GPU here: these are predictions only; judge a GPU with --profile NAME "
            "(see `gpuinfer profiles`)"
        )
    return lines

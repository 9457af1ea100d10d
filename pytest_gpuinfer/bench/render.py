"""The benchmark as text: a figures table, a ratios table, and what to make of them."""

from __future__ import annotations

from collections.abc import Callable

from pytest_gpuinfer.bench.record import ModeResult
from pytest_gpuinfer.bench.runner import BenchResult
from pytest_gpuinfer.probes.memory_units import format_bytes


def _bytes(value: int | None) -> str:
    return "-" if value is None else format_bytes(value)


def _num(value: float | None, scale: float = 1.0, digits: int = 2, suffix: str = "") -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}{suffix}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _peak(r: ModeResult) -> str:
    if r.peak_reserved_bytes is not None:
        return f"{_bytes(r.peak_allocated_bytes)} / {_bytes(r.peak_reserved_bytes)}"
    return f"RAM {_bytes(r.peak_ram_bytes)}"


def _spread(r: ModeResult) -> str:
    if r.spread is None:
        return "-"
    flag = " WIDE" if r.spread_too_wide else ""
    return f"{r.spread.iqr_over_median * 100:.1f}%/{r.spread.cv * 100:.1f}%{flag}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("-" * len(lines[0]))
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return lines


FIGURE_COLUMNS: list[tuple[str, Callable[[ModeResult], str]]] = [
    ("mode", lambda r: r.mode + (" (ref)" if r.reference else "")),
    ("batch", lambda r: str(r.workload.batch_size)),
    ("status", lambda r: r.status),
    ("load s", lambda r: _num(r.load_seconds)),
    ("weights", lambda r: _bytes(r.weights_bytes)),
    ("peak alloc / reserved", _peak),
    ("NVML proc", lambda r: _bytes(r.peak_process_bytes)),
    ("prefill ms", lambda r: _num(r.prefill_seconds, 1000)),
    ("decode ms/tok", lambda r: _num(r.decode_seconds_per_token, 1000)),
    ("tok/s", lambda r: _num(r.decode_tokens_per_second, digits=1)),
    ("e2e s", lambda r: _num(r.end_to_end_seconds, digits=3)),
    ("spread iqr/cv", _spread),
    ("J/tok", lambda r: _num(r.energy_joules_per_token, digits=3)),
    ("floor ms", lambda r: _num(r.floor_seconds_per_token, 1000, 3)),
    ("MBU", lambda r: _num(r.mbu, 100, 1, "%")),
]

RATIO_COLUMNS: list[tuple[str, str]] = [
    ("load", "load_seconds"),
    ("weights", "weights_bytes"),
    ("peak reserved", "peak_reserved_bytes"),
    ("NVML proc", "peak_process_bytes"),
    ("prefill", "prefill_seconds"),
    ("decode/tok", "decode_seconds_per_token"),
    ("tok/s", "decode_tokens_per_second"),
    ("e2e", "end_to_end_seconds"),
    ("J/tok", "energy_joules_per_token"),
    ("MBU", "mbu"),
]


def bench_text(bench: BenchResult) -> str:
    """The report the CLI prints: context, figures, ratios, reasons and warnings."""
    c = bench.config
    lines = [
        "gpuinfer bench",
        "==============",
        f"model {c.model} on {bench.device}",
        bench.stack,
        f"workload: prompt {c.prompt_len} tokens, {c.new_tokens} new tokens "
        f"(min_new_tokens = max_new_tokens), batch {', '.join(map(str, c.batch_sizes))}; "
        f"{c.repetitions.warmup} warm-up, >= {c.repetitions.min_count} repetitions and "
        f">= {c.repetitions.min_seconds:g} s per mode, each mode in its own process",
    ]
    if bench.bandwidth.value is not None:
        gb_per_s = bench.bandwidth.value / 1e9
        lines.append(f"peak memory bandwidth {gb_per_s:,.0f} GB/s ({bench.bandwidth.source})")
    lines.append("")
    rows = [
        [get(r) for _, get in FIGURE_COLUMNS] for r in bench.results if r.status != "not-runnable"
    ]
    if rows:
        lines += _table([name for name, _ in FIGURE_COLUMNS], rows)
    compared = [r for r in bench.results if r.ratios]
    if compared:
        lines += ["", f"ratio to {bench.reference} (the reference, measured in this run)"]
        header = ["mode", "batch", *[name for name, _ in RATIO_COLUMNS]]
        ratio_rows = [
            [
                r.mode,
                str(r.workload.batch_size),
                *[_ratio(r.ratios.get(key)) for _, key in RATIO_COLUMNS],
            ]
            for r in compared
        ]
        lines += _table(header, ratio_rows)
    lines += _explanations(bench)
    return "\n".join(lines)


def _explanations(bench: BenchResult) -> list[str]:
    lines = [""]
    seen: set[tuple[str, str]] = set()
    for r in bench.results:
        if r.status != "measured" and r.reason and (r.mode, r.reason) not in seen:
            seen.add((r.mode, r.reason))
            lines.append(f"{r.mode}: {r.status}: {r.reason}")
    wide = [r.label for r in bench.results if r.spread_too_wide]
    if wide:
        lines.append(
            f"spread too wide (IQR/median > {bench.config.repetitions.max_spread:.0%}) for "
            f"{', '.join(wide)}: do not decide on these; add repetitions (--min-seconds) or "
            "quiet the machine"
        )
    notes = sorted({n for r in bench.results for n in r.notes})
    lines += [f"note: {n}" for n in notes]
    if bench.watch_note:
        lines.append(f"note: {bench.watch_note}")
    if bench.foreign_processes:
        listed = ", ".join(
            f"pid {p['pid']} ({p['name']}"
            + (f", {format_bytes(p['used_bytes'])}" if p.get("used_bytes") else "")
            + ")"
            for p in bench.foreign_processes
        )
        lines.append(f"UNTRUSTED: other processes used the GPU during the run: {listed}")
    if bench.interrupted:
        lines.append("INTERRUPTED: partial results (Ctrl-C)")
    measured = [r for r in bench.results if r.mbu is not None]
    if measured:
        best = max(r.mbu for r in measured if r.mbu is not None)
        lines.append(
            f"MBU (bandwidth floor / measured decode step) peaks at {best:.1%}: plain "
            "generate() is bound by the host (Python, kernel launches), not by memory bandwidth"
            if best < 0.25
            else f"MBU peaks at {best:.1%} of the bandwidth floor"
        )
    return lines if len(lines) > 1 else []

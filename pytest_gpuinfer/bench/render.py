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


def _table(header: list[str], rows: list[list[str]], width: int | None = None) -> list[str]:
    """Columns two spaces apart; one space where that keeps the table within ``width``
    (figures vary in length from run to run: a noisy run's wider intervals must not push
    the default table past the terminal)."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    gap = "  "
    if width is not None and sum(widths) + 2 * (len(widths) - 1) > width:
        gap = " "
    lines = [gap.join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("-" * len(lines[0]))
    for row in rows:
        lines.append(gap.join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return lines


def _interval(r: ModeResult, name: str) -> str:
    interval = r.intervals.get(name)
    ratio = r.ratios.get(name)
    if interval is None:
        return _ratio(ratio)
    return f"{interval.ratio:.2f}x [{interval.low:.2f}, {interval.high:.2f}]"


def _verdict(r: ModeResult) -> str:
    if r.reference:
        return "reference"
    interval = r.intervals.get("decode_seconds_per_token")
    if interval is None:
        return "-"
    return {"higher": "slower", "lower": "faster"}.get(interval.verdict, interval.verdict)


WIDTH = 120
"""The default tables fit a 120-column terminal (and a CI log); ``--wide`` shows all."""

FIGURE_COLUMNS: list[tuple[str, Callable[[ModeResult], str]]] = [
    ("mode", lambda r: r.mode + (" (ref)" if r.reference else "")),
    ("batch", lambda r: str(r.workload.batch_size)),
    ("status", lambda r: r.status),
    ("load s", lambda r: _num(r.load_seconds)),
    ("weights", lambda r: _bytes(r.weights_bytes)),
    (
        "peak reserved",
        lambda r: _bytes(r.peak_reserved_bytes) if r.peak_reserved_bytes else _peak(r),
    ),
    ("prefill ms", lambda r: _num(r.prefill_seconds, 1000)),
    ("decode ms/tok", lambda r: _num(r.decode_seconds_per_token, 1000)),
    ("tok/s", lambda r: _num(r.decode_tokens_per_second, digits=1)),
    ("iqr/cv", _spread),
    ("MBU", lambda r: _num(r.mbu, 100, 1, "%")),
]

WIDE_COLUMNS: list[tuple[str, Callable[[ModeResult], str]]] = [
    *FIGURE_COLUMNS[:5],
    ("peak alloc / reserved", _peak),
    ("NVML proc", lambda r: _bytes(r.peak_process_bytes)),
    *FIGURE_COLUMNS[6:10],
    ("e2e s", lambda r: _num(r.end_to_end_seconds, digits=3)),
    ("J/tok", lambda r: _num(r.energy_joules_per_token, digits=3)),
    ("floor ms", lambda r: _num(r.floor_seconds_per_token, 1000, 3)),
    FIGURE_COLUMNS[10],
    ("rounds", lambda r: str(len(r.per_round()))),
]

RATIO_COLUMNS: list[tuple[str, Callable[[ModeResult], str]]] = [
    ("mode", lambda r: r.mode),
    ("batch", lambda r: str(r.workload.batch_size)),
    ("decode/tok [95% CI]", lambda r: _interval(r, "decode_seconds_per_token")),
    ("verdict", _verdict),
    ("prefill [95% CI]", lambda r: _interval(r, "prefill_seconds")),
    ("weights", lambda r: _ratio(r.ratios.get("weights_bytes"))),
    ("peak reserved", lambda r: _ratio(r.ratios.get("peak_reserved_bytes"))),
    ("J/tok", lambda r: _ratio(r.ratios.get("energy_joules_per_token"))),
    ("MBU", lambda r: _ratio(r.ratios.get("mbu"))),
]


def _context(bench: BenchResult) -> list[str]:
    c = bench.config
    policy = c.repetitions
    lines = [
        f"model {c.model} on {bench.device}",
        bench.stack,
        f"workload: prompt {c.prompt_len} tokens, {c.new_tokens} new tokens "
        f"(min_new_tokens = max_new_tokens), batch {', '.join(map(str, c.batch_sizes))}",
        f"{policy.warmup} warm-up, then interleaved rounds of {policy.per_round} repetition(s) "
        + (f"after {policy.round_warmup} un-timed call(s) " if policy.round_warmup else "")
        + f"per mode until >= {policy.min_count} and >= {policy.min_seconds:g} s each; "
        f"{'pinned to two cores' if c.pin_cpu else 'not pinned'}"
        + (
            f"; then until every decode ratio is within +-{policy.precision:.0%} "
            f"(95% interval), {policy.max_seconds:g} s at most per workload"
            if policy.precision is not None
            else ""
        )
        + ("; static cache + torch.compile (--compiled)" if c.compiled else ""),
    ]
    if bench.bandwidth.value is not None:
        gb_per_s = bench.bandwidth.value / 1e9
        lines.append(f"peak memory bandwidth {gb_per_s:,.0f} GB/s ({bench.bandwidth.source})")
    return lines


def bench_text(bench: BenchResult, *, wide: bool = False) -> str:
    """The report the CLI prints: context, figures, ratios with intervals, reasons and
    warnings. Without ``wide`` every table fits :data:`WIDTH` columns."""
    lines = ["gpuinfer bench", "==============", *_wrap(_context(bench)), ""]
    columns = WIDE_COLUMNS if wide else FIGURE_COLUMNS
    rows = [[get(r) for _, get in columns] for r in bench.results if r.status != "not-runnable"]
    if rows:
        lines += _table([name for name, _ in columns], rows, None if wide else WIDTH)
    compared = [r for r in bench.results if r.ratios and not r.reference]
    if compared:
        lines += [
            "",
            f"ratio to {bench.reference} (the reference, measured in the same rounds; "
            "95% bootstrap interval over rounds)",
        ]
        ratio_rows = [[get(r) for _, get in RATIO_COLUMNS] for r in compared]
        lines += _table([name for name, _ in RATIO_COLUMNS], ratio_rows, WIDTH)
    lines += _wrap(_explanations(bench))
    return "\n".join(lines)


def _wrap(lines: list[str]) -> list[str]:
    """Prose lines folded to :data:`WIDTH` (continuations indented)."""
    import textwrap

    folded: list[str] = []
    for line in lines:
        folded += textwrap.wrap(line, WIDTH, subsequent_indent="  ", break_on_hyphens=False) or [""]
    return folded


def bench_markdown(bench: BenchResult, comparison: list[str] | None = None) -> str:
    """The same run for a CI job summary ($GITHUB_STEP_SUMMARY): GitHub-flavoured Markdown."""
    lines = ["## gpuinfer bench", ""]
    lines += [f"- {line}" for line in _context(bench) if line]
    lines.append("")
    header = [
        "mode", "batch", "status", "decode ms/token", "tok/s", "peak reserved", "MBU",
        f"decode vs {bench.reference} (95% CI)", "verdict",
    ]  # fmt: skip
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in bench.results:
        cells = [
            f"{r.mode}{' (ref)' if r.reference else ''}",
            str(r.workload.batch_size),
            r.status,
            _num(r.decode_seconds_per_token, 1000),
            _num(r.decode_tokens_per_second, digits=1),
            _bytes(r.peak_reserved_bytes),
            _num(r.mbu, 100, 1, "%"),
            "-" if r.reference else _interval(r, "decode_seconds_per_token"),
            _verdict(r) + (" (spread too wide)" if r.spread_too_wide else ""),
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    notes = [line for line in _explanations(bench) if line]
    if notes:
        lines += ["", *[f"- {line}" for line in notes]]
    if comparison:
        lines += ["", "### against the baseline", "", *[f"- {line}" for line in comparison]]
    return "\n".join(lines) + "\n"


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
    for index, check in sorted(bench.precision.items()):
        lines.append(check.line(f"b{bench.config.batch_sizes[index]}"))
    notes = sorted({n for r in bench.results for n in r.notes})
    lines += [f"note: {n}" for n in [*bench.notes, *notes]]
    undecided = [
        r.label
        for r in bench.results
        if r.interval("decode_seconds_per_token") is not None
        and r.intervals["decode_seconds_per_token"].indistinguishable
    ]
    if undecided:
        lines.append(
            f"indistinguishable from {bench.reference} in decode (interval spans 1): "
            f"{', '.join(undecided)}"
        )
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
    lines += _mbu_lines(bench)
    return lines if len(lines) > 1 else []


MBU_TARGET = 0.40
"""Below this share of the bandwidth floor, a row's line says where its decode step goes."""


def _mbu_lines(bench: BenchResult) -> list[str]:
    """The MBU verdict: per row below MBU_TARGET, the measured reason when the profiled
    split is there (GPU idle share = the host's; the kernels' own share of the floor),
    else the one-line reading of the peak."""
    measured = [r for r in bench.results if r.mbu is not None]
    if not measured:
        return []
    lines: list[str] = []
    for r in measured:
        split = r.time_split or {}
        kernel = split.get("gpu_kernel_seconds_per_step")
        if r.mbu is None or r.mbu >= MBU_TARGET or "gpu_busy_share" not in split or not kernel:
            continue
        floor = r.floor_seconds_per_token or 0.0
        per_step = split["kernels_per_step"]
        lines.append(
            f"{r.label}: MBU {r.mbu:.1%}: the GPU is busy {split['gpu_busy_share']:.1%} of the "
            f"decode step (host {split['host_seconds_per_step'] * 1e3:.2f} ms/step: "
            f"generate()'s own work outside the kernels); the kernels alone take "
            f"{kernel * 1e3:.2f} ms (MBU {floor / kernel:.1%} by kernel time; {per_step:.0f} "
            f"kernels/step, {kernel / per_step * 1e6:.1f} us each)"
        )
    best = max(r.mbu for r in measured if r.mbu is not None)
    if lines:
        return lines
    compiled = any(r.run is not None and r.run.compiled for r in measured)
    if best >= 0.25:
        return [f"MBU peaks at {best:.1%} of the bandwidth floor"]
    where = "generate() with a compiled decode step" if compiled else "plain generate()"
    return [
        f"MBU (bandwidth floor / measured decode step) peaks at {best:.1%}: {where} is bound "
        "by the host (Python, kernel launches), not by memory bandwidth; the time split "
        "(without --no-split) measures where the step goes"
    ]

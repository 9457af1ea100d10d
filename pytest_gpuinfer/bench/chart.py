"""The PNG chart comparing modes: latency and memory side by side (needs matplotlib)."""

from __future__ import annotations

import os
from pathlib import Path

from pytest_gpuinfer.bench.runner import BenchResult
from pytest_gpuinfer.probes.errors import InputError

EXTRA_HINT = "pip install 'pytest-gpuinfer[chart]'"


def check_chart_path(path: str | os.PathLike[str]) -> Path:
    """Fail before measuring: matplotlib importable, ``path`` a writable .png."""
    from pytest_gpuinfer.outputs import check_path

    target = check_path(path, "--chart")
    if target.suffix.lower() != ".png":
        raise InputError(f"--chart {str(target)!r}: expected a file name ending in .png")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InputError(f"--chart needs matplotlib: {EXTRA_HINT}") from None
    return target


def write_chart(bench: BenchResult, path: str | os.PathLike[str]) -> Path:
    """Decode ms/token and prefill ms (left), weights and peak memory in GiB (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in bench.results if r.decode_seconds_per_token is not None]
    labels = [r.label + (" *" if r.reference else "") for r in rows]
    positions = list(range(len(rows)))
    figure, (left, right) = plt.subplots(1, 2, figsize=(max(8.0, 1.1 * len(rows) + 6), 4.5))
    width = 0.4
    decode = [(r.decode_seconds_per_token or 0) * 1000 for r in rows]
    prefill = [(r.prefill_seconds or 0) * 1000 for r in rows]
    left.bar([p - width / 2 for p in positions], decode, width, label="decode ms/token")
    left.bar([p + width / 2 for p in positions], prefill, width, label="prefill ms")
    for p, r in zip(positions, rows, strict=True):
        if r.spread is not None:
            left.errorbar(
                p - width / 2,
                decode[p],
                yerr=decode[p] * r.spread.iqr_over_median / 2,
                color="black",
                capsize=3,
            )
    left.set_title("latency (median; bar: IQR)")
    left.set_ylabel("milliseconds")
    gib = 2**30
    weights = [(r.weights_bytes or 0) / gib for r in rows]
    peak = [(r.peak_reserved_bytes or r.peak_ram_bytes or 0) / gib for r in rows]
    right.bar([p - width / 2 for p in positions], weights, width, label="weights")
    peak_label = "peak reserved" if any(r.peak_reserved_bytes for r in rows) else "peak RAM"
    right.bar([p + width / 2 for p in positions], peak, width, label=peak_label)
    right.set_title("memory")
    right.set_ylabel("GiB")
    for axis in (left, right):
        axis.set_xticks(positions)
        axis.set_xticklabels(labels, rotation=30, ha="right")
        axis.legend()
    figure.suptitle(
        f"{Path(bench.config.model).name} on {bench.device}: prompt {bench.config.prompt_len}, "
        f"{bench.config.new_tokens} new tokens (* reference)"
    )
    figure.tight_layout()
    from pytest_gpuinfer.outputs import write_with

    target = Path(path)
    try:
        write_with(target, lambda stream: figure.savefig(stream, format="png", dpi=110))
    finally:
        plt.close(figure)
    return target

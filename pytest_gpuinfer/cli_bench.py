"""``gpuinfer bench``: measure what each inference mode costs on this machine.

Exit codes: 0 every requested mode was measured; 1 some mode failed, ran out of memory
or cannot run here (``--strict``: also an untrusted run or a too-wide spread); 2 bad
input, checked before anything is measured; 130 interrupted (partial results written).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pytest_gpuinfer.probes.modes import MODES

EXIT_OK = 0
EXIT_NOT_MEASURED = 1
EXIT_INTERRUPTED = 130


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommand to the ``gpuinfer`` subparsers."""
    from pytest_gpuinfer.bench.config import DEFAULT_NEW_TOKENS, DEFAULT_PROMPT_LEN

    bench: argparse.ArgumentParser = sub.add_parser(
        "bench", help="measure load, latency, memory and energy of each mode on this machine"
    )
    bench.add_argument(
        "--model", metavar="PATH", required=True, help="model directory or cached id"
    )
    bench.add_argument(
        "--modes",
        metavar="LIST",
        default=",".join(MODES),
        help="comma-separated modes (default: all; the reference mode is always measured)",
    )
    bench.add_argument("--batch-size", metavar="LIST", default="1", help="e.g. 1 or 1,8")
    bench.add_argument("--prompt-len", metavar="N", default=str(DEFAULT_PROMPT_LEN))
    bench.add_argument("--new-tokens", metavar="N", default=str(DEFAULT_NEW_TOKENS))
    bench.add_argument("--warmup", metavar="N", default="2", help="warm-up generate() calls")
    bench.add_argument("--min-repetitions", metavar="N", default="10")
    bench.add_argument(
        "--min-seconds", metavar="S", default="10", help="repeat for at least S seconds too"
    )
    bench.add_argument(
        "--max-spread",
        metavar="FRACTION",
        default="0.05",
        help="decode IQR/median above this is reported too wide (default 0.05)",
    )
    bench.add_argument("--reference", metavar="MODE", help="default: fp16 on a GPU, fp32 on a CPU")
    bench.add_argument("--json", metavar="FILE", help="write the versioned JSON record to FILE")
    bench.add_argument("--chart", metavar="FILE.png", help="write a PNG chart (needs matplotlib)")
    bench.add_argument(
        "--time-split",
        action="store_true",
        help="profile one generate() per workload: GPU kernel time vs host time per token",
    )
    bench.add_argument(
        "--no-pin", action="store_true", help="do not pin the measuring process to two cores"
    )
    bench.add_argument("--quiet", action="store_true", help="no progress display on stderr")
    bench.add_argument(
        "--strict", action="store_true", help="exit 1 on an untrusted run or a too-wide spread"
    )
    return bench


def _number(text: str, what: str) -> float:
    from pytest_gpuinfer.probes.errors import InputError

    try:
        return float(text)
    except ValueError:
        raise InputError(f"{what} {text!r}: expected a number") from None


def _integer(text: str, what: str, minimum: int, why: str = "") -> int:
    from pytest_gpuinfer.bench.config import check_count
    from pytest_gpuinfer.probes.errors import InputError

    try:
        value = int(text)
    except ValueError:
        raise InputError(f"{what} {text!r}: expected an integer >= {minimum}{why}") from None
    return check_count(value, what, minimum=minimum, why=why)


def config_from_args(args: argparse.Namespace) -> Any:
    """A validated BenchConfig; InputError names the first bad value."""
    from pytest_gpuinfer.bench.config import BenchConfig, Repetitions, parse_counts
    from pytest_gpuinfer.probes.report import parse_modes
    from pytest_gpuinfer.probes.sources import resolve_source

    resolve_source(args.model)
    return BenchConfig(
        model=args.model,
        modes=parse_modes(args.modes, what="mode in --modes"),
        batch_sizes=parse_counts(args.batch_size, "batch size"),
        prompt_len=_integer(args.prompt_len, "prompt length", 1),
        new_tokens=_integer(args.new_tokens, "new tokens", 2, " (decode needs a 2nd token)"),
        repetitions=Repetitions(
            warmup=_integer(args.warmup, "warm-up runs", 0),
            min_count=_integer(args.min_repetitions, "repetitions", 2, " (a spread needs two)"),
            min_seconds=_number(args.min_seconds, "minimum seconds"),
            max_spread=_number(args.max_spread, "max spread"),
        ),
        reference=args.reference,
        time_split=args.time_split,
        pin_cpu=not args.no_pin,
    )


def run(args: argparse.Namespace) -> int:
    """Check every input, measure, then print the table and write JSON / chart."""
    from pytest_gpuinfer.bench.chart import check_chart_path, check_writable, write_chart
    from pytest_gpuinfer.bench.progress import Progress
    from pytest_gpuinfer.bench.render import bench_text
    from pytest_gpuinfer.bench.runner import run_bench

    config = config_from_args(args)
    json_path = Path(args.json) if args.json else None
    if json_path is not None:
        check_writable(json_path, "--json")
    chart_path = check_chart_path(args.chart) if args.chart else None
    result = run_bench(config, progress=Progress(enabled=not args.quiet))
    if json_path is not None:
        json_path.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    if chart_path is not None and any(r.decode_seconds_per_token for r in result.results):
        write_chart(result, chart_path)
    print(bench_text(result))
    if result.interrupted:
        return EXIT_INTERRUPTED
    if any(r.status != "measured" for r in result.results):
        return EXIT_NOT_MEASURED
    if args.strict and (not result.trusted or any(r.spread_too_wide for r in result.results)):
        return EXIT_NOT_MEASURED
    return EXIT_OK

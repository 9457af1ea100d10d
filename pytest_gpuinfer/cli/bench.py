"""``gpuinfer bench``: measure what each inference mode costs on this machine.

Exit codes: 0 every requested mode was measured; 1 some mode failed, ran out of memory
or cannot run here (``--strict``: also an untrusted run or a too-wide spread;
``--baseline``: also a regression past the threshold); 2 bad input, checked before
anything is measured; 130 interrupted (partial results written).

``--json`` means what it means for ``gpuinfer audit`` and ``gpuinfer merge``: the record
on stdout (the table then goes to stderr). ``--output FILE`` writes it to a file;
``--json FILE``, the old spelling, still writes the file, with a deprecation note.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pytest_gpuinfer.probes.modes import MODES

EXIT_OK = 0
EXIT_NOT_MEASURED = 1
EXIT_INTERRUPTED = 130
STDOUT = "-"
JSON_FILE_DEPRECATED = (
    "gpuinfer bench: --json FILE is deprecated: use --output FILE (--json alone prints the "
    "record to stdout, as `gpuinfer audit --json` and `gpuinfer merge --json` do)"
)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommand to the ``gpuinfer`` subparsers."""
    from pytest_gpuinfer.bench.compare import DEFAULT_FIGURES, DEFAULT_THRESHOLD
    from pytest_gpuinfer.bench.config import (
        DEFAULT_MAX_SECONDS,
        DEFAULT_NEW_TOKENS,
        DEFAULT_PROMPT_LEN,
    )

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
        "--per-round", metavar="N", default="1", help="repetitions per mode in each round"
    )
    bench.add_argument(
        "--round-warmup",
        metavar="N",
        default="0",
        help="un-timed generate() calls per mode at the start of every round (default 0)",
    )
    bench.add_argument(
        "--min-seconds", metavar="S", default="10", help="repeat for at least S seconds too"
    )
    bench.add_argument(
        "--max-spread",
        metavar="FRACTION",
        default="0.05",
        help="decode IQR/median above this is reported too wide (default 0.05)",
    )
    bench.add_argument(
        "--precision",
        metavar="FRACTION",
        help="after the minimum, add rounds until every decode ratio's 95%% interval is within "
        "+-FRACTION of it (e.g. 0.05), or --max-seconds pass",
    )
    bench.add_argument(
        "--max-seconds",
        metavar="S",
        default=f"{DEFAULT_MAX_SECONDS:g}",
        help=f"cap on one workload's rounds with --precision (default {DEFAULT_MAX_SECONDS:g})",
    )
    bench.add_argument("--reference", metavar="MODE", help="default: fp16 on a GPU, fp32 on a CPU")
    bench.add_argument(
        "--json",
        nargs="?",
        const=STDOUT,
        metavar="FILE",
        help="print the versioned JSON record to stdout (the table goes to stderr); "
        "`--json FILE` is deprecated: use --output FILE",
    )
    bench.add_argument(
        "--output", "--json-file", metavar="FILE", help="write the versioned JSON record to FILE"
    )
    bench.add_argument(
        "--markdown", metavar="FILE", help="append a Markdown summary (e.g. $GITHUB_STEP_SUMMARY)"
    )
    bench.add_argument(
        "--baseline", metavar="FILE", help="compare with a saved record; exit 1 on a regression"
    )
    bench.add_argument(
        "--threshold",
        metavar="FRACTION",
        default=str(DEFAULT_THRESHOLD),
        help=f"a regression is a change past this fraction (default {DEFAULT_THRESHOLD})",
    )
    bench.add_argument(
        "--compare-figures",
        metavar="LIST",
        default=",".join(DEFAULT_FIGURES),
        help="figures --baseline compares (default: %(default)s)",
    )
    bench.add_argument(
        "--compiled",
        action="store_true",
        help="static KV cache + transformers' torch.compile of the decode step (CUDA graphs)",
    )
    bench.add_argument("--wide", action="store_true", help="every column (wider than 120)")
    bench.add_argument("--chart", metavar="FILE.png", help="write a PNG chart (needs matplotlib)")
    bench.add_argument(
        "--time-split",
        action="store_true",
        help="profile one generate() per workload: GPU kernel time vs host time per token",
    )
    pin = bench.add_mutually_exclusive_group()
    pin.add_argument(
        "--pin",
        dest="pin",
        action="store_true",
        default=None,
        help="pin each measuring process to two cores (off by default: see docs/bench.md)",
    )
    pin.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin (default)")
    bench.add_argument("--quiet", action="store_true", help="no progress display on stderr")
    bench.add_argument(
        "--strict", action="store_true", help="exit 1 on an untrusted run or a too-wide spread"
    )
    return bench


def _number(text: str, what: str) -> float:
    import math

    from pytest_gpuinfer.probes.errors import InputError

    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{what} {text!r}: expected a number") from None
    if not math.isfinite(value):
        raise InputError(f"{what} {text!r}: expected a finite number")
    return value


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
    from pytest_gpuinfer.bench.config import (
        PIN_CPU_DEFAULT,
        BenchConfig,
        Repetitions,
        parse_counts,
    )
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
            per_round=_integer(args.per_round, "repetitions per round", 1),
            round_warmup=_integer(args.round_warmup, "warm-up calls per round", 0),
            precision=None if args.precision is None else _number(args.precision, "precision"),
            max_seconds=_number(args.max_seconds, "maximum seconds"),
        ),
        reference=args.reference,
        time_split=args.time_split,
        pin_cpu=PIN_CPU_DEFAULT if args.pin is None else args.pin,
        compiled=args.compiled,
    )


def _outputs(args: argparse.Namespace) -> tuple[bool, Path | None]:
    """(print the record to stdout, the file to write it to), the old spelling noted."""
    from pytest_gpuinfer.probes.errors import InputError

    to_stdout = args.json == STDOUT
    path = args.output
    if path is not None and not path.strip():
        raise InputError("--output is empty: expected a file path")
    if args.json not in (None, STDOUT):
        if not args.json.strip():
            raise InputError("--json is empty: give --json alone for stdout, or --output FILE")
        if path is not None and path != args.json:
            raise InputError(f"--json {args.json!r} and --output {path!r}: give one file")
        path = args.json
    return to_stdout, Path(path) if path is not None else None


def positions_warning(config: Any) -> str | None:
    """The audit's warning when prompt + new tokens pass the model's positions, or None."""
    from pytest_gpuinfer.probes.errors import InputError
    from pytest_gpuinfer.probes.memory_workload import positions_note
    from pytest_gpuinfer.probes.model_shape import declared_positions
    from pytest_gpuinfer.probes.sources import read_config, resolve_config_path

    try:
        data, _ = read_config(resolve_config_path(config.model))
    except InputError:
        return None  # the load says what is wrong with the model, with its own line
    return positions_note(declared_positions(data), config.prompt_len, config.new_tokens)


def run(args: argparse.Namespace) -> int:
    """Check every input, measure, then print the table and write JSON / chart / Markdown."""
    from pytest_gpuinfer.bench.chart import check_chart_path, write_chart
    from pytest_gpuinfer.bench.compare import (
        compare,
        comparison_lines,
        load_baseline,
        parse_figures,
    )
    from pytest_gpuinfer.bench.progress import Progress
    from pytest_gpuinfer.bench.render import bench_markdown, bench_text
    from pytest_gpuinfer.bench.runner import run_bench
    from pytest_gpuinfer.outputs import Outputs, dumps_json, write_json
    from pytest_gpuinfer.probes.errors import InputError

    config = config_from_args(args)
    to_stdout, json_path = _outputs(args)
    for flag, value in (("--baseline", args.baseline), ("--markdown", args.markdown)):
        if value is not None and not value.strip():
            raise InputError(f"{flag} is empty: expected a file path")
    files = Outputs([(args.model, "--model")])
    if args.baseline is not None:
        files.add_input(args.baseline, "--baseline")
    if json_path is not None:
        json_path = files.add(json_path, "--output" if args.output is not None else "--json")
    markdown_path = files.add(args.markdown, "--markdown") if args.markdown is not None else None
    chart_path = None
    if args.chart is not None:
        chart_path = files.add(check_chart_path(args.chart), "--chart")
    baseline = load_baseline(args.baseline) if args.baseline is not None else None
    threshold = _number(args.threshold, "--threshold")
    if not threshold > 0:
        raise InputError(f"--threshold {args.threshold!r}: expected a fraction > 0")
    figures = parse_figures(args.compare_figures)
    if args.json not in (None, STDOUT):
        print(JSON_FILE_DEPRECATED, file=sys.stderr)  # after the checks: bad input is one line
    warning = positions_warning(config)
    if warning is not None:
        print(f"gpuinfer bench: warning: {warning}", file=sys.stderr)

    result = run_bench(config, progress=Progress(enabled=not args.quiet))
    record = result.to_dict()
    lines: list[str] = []
    regressed = False
    if baseline is not None:
        changes, unmatched = compare(record, baseline, threshold=threshold, figures=figures)
        lines = comparison_lines(changes, unmatched, threshold, args.baseline)
        regressed = any(c.regressed for c in changes)
        record["baseline"] = {
            "file": args.baseline,
            "threshold": threshold,
            "figures": list(figures),
            "regressions": [c.line() for c in changes if c.regressed],
        }
    if json_path is not None:
        write_json(json_path, record, what="--output")
    if chart_path is not None and any(r.decode_seconds_per_token for r in result.results):
        write_chart(result, chart_path)
    if markdown_path is not None:
        with markdown_path.open("a", encoding="utf-8") as handle:
            handle.write(bench_markdown(result, lines or None))
    text = bench_text(result, wide=args.wide) + ("\n\n" + "\n".join(lines) if lines else "")
    if to_stdout:
        print(text, file=sys.stderr)
        print(dumps_json(record))
    else:
        print(text)
    if result.interrupted:
        return EXIT_INTERRUPTED
    if any(r.status != "measured" for r in result.results) or regressed:
        return EXIT_NOT_MEASURED
    if args.strict and (not result.trusted or any(r.spread_too_wide for r in result.results)):
        return EXIT_NOT_MEASURED
    return EXIT_OK

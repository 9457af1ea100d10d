"""``gpuinfer``: audit this machine (or a simulated GPU) for Hugging Face inference modes.

Exit codes: 0 every requested mode runs (and the model's workload fits, when one is
given); 1 some mode does not; 2 bad input, or output that cannot be written. ``--strict``
also fails on "degraded". Without a GPU (and without ``--profile``) the memory fit is shown
as predictions only and does not change the exit code. With ``--json`` an error is a JSON
object on stdout too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from pytest_gpuinfer.probes.errors import InputError
from pytest_gpuinfer.probes.modes import MODES, parse_mode_list
from pytest_gpuinfer.probes.report import Report, Status

if TYPE_CHECKING:
    from pytest_gpuinfer.probes.memory_workload import Workload

EXIT_OK = 0
EXIT_NOT_SUPPORTED = 1
EXIT_USAGE = 2


class _UsageError(Exception):
    """A command line argparse refused; main() reports it like any other bad input."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line and exit 2, without the usage dump."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(self.prog, message)


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gpuinfer",
        description="Can this machine run a Hugging Face model in int8, fastpath, fp16 ...?",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    audit = sub.add_parser(
        "audit",
        help="judge every mode on this machine or a profile",
        description="Unset options are read from the plugin's variables: GPUINFER_MODEL, "
        "GPUINFER_MODES, GPUINFER_PROFILE, GPUINFER_STRICT (command line > variable > default).",
    )
    audit.add_argument(
        "--model", metavar="PATH", help="model directory, config.json or cached id [GPUINFER_MODEL]"
    )
    audit.add_argument(
        "--modes",
        metavar="LIST",
        default=None,
        help=f"comma-separated modes to judge (default: all of {','.join(MODES)}) [GPUINFER_MODES]",
    )
    audit.add_argument(
        "--profile",
        metavar="NAME|FILE",
        action="append",
        default=None,
        help="judge a simulated GPU (see `gpuinfer profiles`) instead of this machine "
        "[GPUINFER_PROFILE]; with --sweep, a profile to add to the built-in ones (repeatable)",
    )
    audit.add_argument(
        "--profile-from-labels",
        metavar="FILE",
        help="judge the GPU a Kubernetes node's GPU feature discovery labels describe "
        "(`kubectl get node N -o json` .metadata.labels, or key=value lines)",
    )
    audit.add_argument(
        "--sweep",
        action="store_true",
        help="with --model: judge every built-in profile (and --profile ones), smallest fit first",
    )
    audit.add_argument(
        "--max-memory",
        metavar="SPEC",
        help='memory per device for the fit and the planned device map, e.g. "0=20GiB,cpu=64GiB" '
        """or JSON '{"0": "20GiB", "cpu": "64GiB"}'""",
    )
    _add_workload_arguments(audit)
    audit.add_argument("--json", action="store_true", help="print the whole report as JSON")
    audit.add_argument(
        "--verify",
        action="store_true",
        help="run one real bitsandbytes int8 matmul in a child process (seconds; cached)",
    )
    audit.add_argument(
        "--strict",
        action="store_true",
        default=None,
        help="exit 1 on 'degraded' too, not only 'unsupported' [GPUINFER_STRICT]",
    )
    profiles = sub.add_parser("profiles", help="list the built-in simulated GPU profiles")
    profiles.set_defaults(func=lambda args: _profiles())
    matrix = sub.add_parser("matrix", help="print the compatibility matrix (Markdown)")
    matrix.add_argument("--output", metavar="FILE", help="write it to FILE instead of stdout")
    matrix.add_argument(
        "--check", action="store_true", help="exit 1 when FILE differs from the rules table"
    )
    audit.set_defaults(func=_audit)
    matrix.set_defaults(func=_matrix)
    from pytest_gpuinfer.cli import bench as cli_bench
    from pytest_gpuinfer.cli import env, export, merge, route

    cli_bench.add_parser(sub).set_defaults(func=cli_bench.run)
    merge.add_parser(sub)
    route.add_parser(sub)
    env.add_parser(sub)
    export.add_parser(sub)
    return parser


def _add_workload_arguments(audit: argparse.ArgumentParser) -> None:
    from pytest_gpuinfer.probes.memory_workload import (
        DEFAULT_BATCH_SIZE,
        DEFAULT_NEW_TOKENS,
        DEFAULT_SEQ_LEN,
    )

    for flag, default, what in (
        ("--batch-size", DEFAULT_BATCH_SIZE, "prompts per generate() call"),
        ("--seq-len", DEFAULT_SEQ_LEN, "prompt tokens (an encoder-decoder's encoder input)"),
        ("--new-tokens", DEFAULT_NEW_TOKENS, "tokens generate() adds"),
    ):
        audit.add_argument(
            flag,
            metavar="N",
            type=int,
            default=None,
            help=f"workload for --model: {what} (default {default})",
        )


def _workload(args: argparse.Namespace) -> Workload:
    from pytest_gpuinfer.probes.memory_workload import Workload

    given = {
        name: value
        for name, value in (
            ("batch_size", args.batch_size),
            ("seq_len", args.seq_len),
            ("new_tokens", args.new_tokens),
        )
        if value is not None
    }
    if given and args.model is None:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise InputError(f"{flags} describe a workload for a model: give --model PATH too")
    try:
        return Workload.requested(**given)
    except InputError as error:
        raise InputError(f"--{str(error).replace('_', '-', 1)}") from None


def _exit_code(report: Report, modes: Sequence[str], strict: bool) -> int:
    allowed = {Status.SUPPORTED} if strict else {Status.SUPPORTED, Status.DEGRADED}
    if any(report.verdicts[mode].status not in allowed for mode in modes):
        return EXIT_NOT_SUPPORTED
    # Without a GPU the verdicts are about the CPU; GPU memory fit is information only.
    fits = (report.memory_fit or {}).get("fits", {}) if report.gpus else {}
    for mode in modes:
        if mode in fits and Status(fits[mode]["status"]) not in allowed:
            return EXIT_NOT_SUPPORTED
    return EXIT_OK


def _audit(args: argparse.Namespace) -> int:
    from pytest_gpuinfer.cli.audit_settings import AUDIT_ENVIRONMENT, apply_environment
    from pytest_gpuinfer.probes.alloc_conf import allocator_config
    from pytest_gpuinfer.probes.probe import probe

    sources = apply_environment(args, os.environ)
    try:
        modes = tuple(
            mode.name
            for mode in parse_mode_list(",".join(MODES) if args.modes is None else args.modes)
        )
    except InputError as error:
        where = AUDIT_ENVIRONMENT["modes"] if "modes" in sources else "--modes"
        raise InputError(f"{where}: {error}") from None
    profiles: list[str] = list(args.profile or [])
    labelled = None
    if args.profile_from_labels is not None:
        from pytest_gpuinfer.probes.profile_labels import profile_from_labels, read_labels

        path = Path(args.profile_from_labels)
        labelled = profile_from_labels(read_labels(path), source=str(path))
    if args.sweep:
        if args.model is None:
            raise InputError("--sweep judges a model on every profile: give --model PATH too")
        from pytest_gpuinfer.cli import sweep

        extra: list[object] = [*profiles, *([labelled] if labelled is not None else [])]
        return sweep.run(args.model, extra, modes, _workload(args), os.environ, as_json=args.json)
    if len(profiles) > 1:
        raise InputError(
            f"--profile is given {len(profiles)} times ({', '.join(profiles)}); give one, "
            "or add --sweep to compare them"
        )
    profile: object = profiles[0] if profiles else None
    if labelled is not None:
        if profiles and "profile" not in sources:
            raise InputError(
                "--profile and --profile-from-labels both describe the GPU: give one of them"
            )
        profile = labelled
    max_memory = None
    if args.max_memory is not None:
        from pytest_gpuinfer.probes.memory_units import parse_max_memory

        max_memory = parse_max_memory(args.max_memory, what="--max-memory")
    workload = _workload(args)
    try:
        report = probe(profile, verify=args.verify, modes=modes)  # type: ignore[arg-type]
    except InputError as error:
        if "profile" in sources and labelled is None:
            raise InputError(f"{AUDIT_ENVIRONMENT['profile']}: {error}") from None
        raise
    fit_rows: list[str] = []
    if args.model is not None:
        from pytest_gpuinfer.probes.memory_fit import (
            check_max_memory,
            estimate_model_memory,
            fit_on_devices,
        )
        from pytest_gpuinfer.probes.render import memory_fit_lines

        if max_memory is not None:
            check_max_memory(max_memory, report.gpus)  # before the estimate: exit 2 fast
        estimate = estimate_model_memory(args.model, modes=modes)
        fit = fit_on_devices(
            estimate,
            report.gpus,
            max_memory=max_memory,
            workload=workload,
            allocator=allocator_config(os.environ),
        )
        report.memory_fit = fit.to_dict()
        report.memory_fit["judged"] = bool(report.gpus)
        verdicts = {
            mode: report.verdicts[mode].status for mode in fit.fits if mode in report.verdicts
        }
        for mode, status in verdicts.items():
            # The fit is memory only; this says whether the mode itself runs here.
            report.memory_fit["fits"][mode]["mode_verdict"] = status.value
        fit_rows = memory_fit_lines(fit, judged=bool(report.gpus), verdicts=verdicts)
    elif max_memory is not None:
        raise InputError("--max-memory plans a device map for a model: give --model PATH too")
    if args.json:
        from pytest_gpuinfer.outputs import dumps_json

        print(dumps_json(report.to_dict()))
    else:
        from pytest_gpuinfer.probes.render import audit_text

        print(audit_text(report))
        if fit_rows:
            print()
            print("\n".join(fit_rows))
    return _exit_code(report, modes, bool(args.strict))


def _profiles() -> int:
    from pytest_gpuinfer.probes.memory_units import format_bytes
    from pytest_gpuinfer.probes.profiles import BUILTIN_PROFILES

    print(f"{'name':<16}{'GPU':<26}{'cc':<6}{'memory':>11}{'bandwidth':>12}  gpus  platform")
    for p in BUILTIN_PROFILES.values():
        cc = f"{p.compute_capability[0]}.{p.compute_capability[1]}"
        bandwidth = f"{p.memory_bandwidth_gb_per_s:.0f} GB/s"
        print(
            f"{p.name:<16}{p.gpu_name:<26}{cc:<6}{format_bytes(p.memory_bytes):>11}"
            f"{bandwidth:>12}  {p.gpu_count:<4}  {p.platform}"
        )
    print("\nA JSON/TOML file with the same fields adds a profile: see docs/audit.md.")
    return EXIT_OK


def _matrix(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pytest_gpuinfer.probes.matrix import render_matrix

    if args.check and args.output is None:
        raise InputError(
            "matrix --check compares a file with the rules table: give --output FILE too "
            "(e.g. --output docs/compatibility.md --check)"
        )
    text = render_matrix()
    if args.output is None:
        print(text, end="")
        return EXIT_OK
    if not args.output.strip():
        raise InputError("matrix --output is empty: expected a file path")
    path = Path(args.output)
    if args.check:
        try:
            current = path.read_text(encoding="utf-8")
        except OSError as error:
            raise InputError(f"cannot read {path}: {error.strerror}") from None
        if current != text:
            print(f"{path} is stale: regenerate it with `gpuinfer matrix --output {path}`")
            return EXIT_NOT_SUPPORTED
        print(f"{path} matches the rules table")
        return EXIT_OK
    from pytest_gpuinfer.outputs import Outputs, write_text

    write_text(Outputs().add(args.output, "matrix --output"), text, what="matrix --output")
    return EXIT_OK


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.version:
        from pytest_gpuinfer import __version__

        print(f"gpuinfer (pytest-gpuinfer) {__version__}")
        return EXIT_OK
    func = getattr(args, "func", None)
    if func is None:
        raise _UsageError(
            "gpuinfer",
            "no command given: expected one of audit, profiles, matrix, bench, merge, route "
            "(gpuinfer --help describes them)",
        )
    code: int = func(args)
    return code


def _fail(message: str, *, as_json: bool, prog: str = "gpuinfer") -> int:
    """Report bad input: one line on stderr and, for ``--json``, a JSON object on stdout.

    The object is ``{"schema": "pytest-gpuinfer/error", "schema_version": "1", "error":
    MESSAGE, "exit_code": 2}``, so a CI
    step that parses ``--json`` output can tell bad input from a report.
    """
    print(f"{prog}: error: {message}", file=sys.stderr)
    if as_json:
        from pytest_gpuinfer.schemas import ERROR

        error = {**ERROR.stamp(), "error": message, "exit_code": EXIT_USAGE}
        print(json.dumps(error))
    return EXIT_USAGE


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # a stdout without a file descriptor
        pass


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in arguments
    parser = _build_parser()
    try:
        args = parser.parse_args(arguments)
        code = _run(parser, args)
        sys.stdout.flush()
        return code
    except _UsageError as error:
        prog, message = error.args
        return _fail(message, as_json=as_json, prog=prog)
    except InputError as error:
        return _fail(str(error), as_json=as_json)
    except BrokenPipeError:
        # The reader (`| head`) has what it wanted.
        _silence_stdout()
        return EXIT_OK
    except OSError as error:
        # stdout is a full disk or a closed file: say so on stderr, once.
        _silence_stdout()
        print(
            f"gpuinfer: error: cannot write the output: {error.strerror or error}",
            file=sys.stderr,
        )
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())

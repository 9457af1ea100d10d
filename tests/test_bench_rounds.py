"""gpuinfer bench's decision figures without a model: the interleaving order, the paired
bootstrap interval, the baseline comparison, the Markdown summary, the ETA and the
compile recipe. The measuring processes are replaced at the pipe (what they answer)."""

from __future__ import annotations

import json
import random
import re
import time
from typing import Any

import pytest

from pytest_gpuinfer.bench import runner
from pytest_gpuinfer.bench.compare import compare, load_baseline, parse_figures
from pytest_gpuinfer.bench.config import BenchConfig, Repetitions, bench_workload
from pytest_gpuinfer.bench.hardware import GpuWatch
from pytest_gpuinfer.bench.measure import Repetition, WorkloadRun
from pytest_gpuinfer.bench.pool import ModeProcess
from pytest_gpuinfer.bench.precision import PrecisionCheck, check_precision
from pytest_gpuinfer.bench.progress import Progress, format_eta
from pytest_gpuinfer.bench.record import (
    ModeResult,
    add_ratios,
    build_result,
    first_in_round_ratio,
)
from pytest_gpuinfer.bench.render import WIDTH, bench_markdown, bench_text
from pytest_gpuinfer.bench.stats import bootstrap_ratio
from pytest_gpuinfer.probes.errors import InputError

# -- interleaving ---------------------------------------------------------------------------


class _FakeChild(ModeProcess):
    """Answers like a measuring process, instantly, and logs what it was asked."""

    def __init__(
        self, mode: str, log: list[tuple[str, ...]], decode_s: float, spread: float = 0.0
    ) -> None:
        super().__init__(mode, f"[-] {mode}")
        self.log = log
        self.decode_s = decode_s
        self.spread = spread
        """Each repetition's decode is decode_s x (1 +- up to spread), seeded."""
        self.noise = random.Random(mode)
        self.reps: list[Repetition] = []

    def next_decode(self) -> float:
        return self.decode_s * (1 + self.noise.uniform(-self.spread, self.spread))

    @property
    def alive(self) -> bool:
        return self.failure is None


def _answer(child: _FakeChild, *command: Any) -> tuple[Any, ...]:
    child.log.append((child.mode, str(command[0]), *map(str, command[1:3])))
    kind = command[0]
    if kind == "warmup":
        return ("warm", command[1], 0.1, None)
    if kind == "round":
        reps = [
            Repetition(0.01, d, 0.01 + d, [d / 3] * 3)
            for d in (child.next_decode() for _ in range(int(command[3])))
        ]
        for rep in reps:
            rep.round = int(command[2])
        child.reps += reps
        return ("round", command[1], [rep.__dict__ for rep in reps])
    run = WorkloadRun(bench_workload(1, 8, 4), "cpu", repetitions=child.reps)
    return ("workload", command[1], run.to_dict())


def test_modes_are_asked_in_rounds_a_b_c_a_b_c(monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[tuple[str, ...]] = []
    children: list[ModeProcess] = [
        _FakeChild(m, log, d) for m, d in (("fp32", 0.03), ("bf16", 0.06), ("fp16", 0.03))
    ]
    monkeypatch.setattr(runner, "_ask", lambda child, watch, all_, *cmd: _answer(child, *cmd))
    config = BenchConfig(model="m", prompt_len=8, new_tokens=4, repetitions=Repetitions(0, 3, 0.0))
    result = runner.BenchResult(config=config, reference="fp32")
    runner._measure_workload(
        0, config.workloads()[0], config, children, GpuWatch(None, None), Progress(enabled=False),
        result,
    )  # fmt: skip
    asked = [
        (mode, kind, rnd) for mode, kind, *rest in log for rnd in [rest[1] if rest[1:] else ""]
    ]
    assert asked == [
        ("fp32", "warmup", ""), ("bf16", "warmup", ""), ("fp16", "warmup", ""),
        ("fp32", "round", "0"), ("bf16", "round", "0"), ("fp16", "round", "0"),
        ("fp32", "round", "1"), ("bf16", "round", "1"), ("fp16", "round", "1"),
        ("fp32", "round", "2"), ("bf16", "round", "2"), ("fp16", "round", "2"),
        ("fp32", "finish", ""), ("bf16", "finish", ""), ("fp16", "finish", ""),
    ]  # fmt: skip
    assert result.rounds == {0: 3}
    assert [r.round for r in children[1].runs[0].repetitions] == [0, 1, 2]


def test_the_seconds_floor_adds_rounds() -> None:
    child = ModeProcess("fp32", "t")
    child.partial[0] = [Repetition(0.0, 0.2, 0.25, []) for _ in range(2)]
    # 3 repetitions asked, but 1 s at 0.25 s per call needs 4 rounds.
    assert runner._rounds_needed([child], 0, Repetitions(0, 3, 1.0), 4) == 4
    assert runner._rounds_needed([child], 0, Repetitions(0, 3, 1.0, per_round=2), 4) == 2


def test_modes_that_resolve_alike_are_named() -> None:
    same = {"attention": "sdpa", "dtype": "torch.float16", "quantizer": None,
            "linear_classes": ["Linear"], "model_class": "LlamaForCausalLM"}  # fmt: skip
    children = []
    for mode, resolution in (
        ("fp16", same),
        ("fastpath", same),
        ("int8", {**same, "quantizer": "Bnb8BitHfQuantizer"}),
    ):
        child = ModeProcess(mode, mode)
        child.resolution = resolution
        children.append(child)
    (note,) = runner.same_kernels(children)
    assert note.startswith("fp16 and fastpath resolve to the same kernels here (attention sdpa")
    assert "int8" not in note


# -- the interval -------------------------------------------------------------------------


def test_a_constant_ratio_has_a_point_interval() -> None:
    reference = [10.0, 11.0, 9.0, 10.5, 9.5]
    interval = bootstrap_ratio([2 * r for r in reference], reference)
    assert interval is not None
    assert (interval.ratio, interval.low, interval.high) == (2.0, 2.0, 2.0)
    assert interval.verdict == "higher" and not interval.indistinguishable


def test_known_samples_give_a_known_interval_spanning_one() -> None:
    reference = [1.0, 1.0, 1.0, 1.0]
    candidate = [0.9, 1.1, 0.95, 1.05]
    interval = bootstrap_ratio(candidate, reference, resamples=4000, seed=0)
    assert interval is not None
    assert interval.ratio == pytest.approx(1.0)
    # Medians of 4 resampled values from {0.9, 0.95, 1.05, 1.1}: 0.9 at the bottom, 1.1 at
    # the top, with 2.5 % of draws beyond 0.925 / 1.075 either side.
    assert 0.9 <= interval.low < 1.0 < interval.high <= 1.1
    assert interval.indistinguishable and interval.verdict == "indistinguishable"
    assert interval.rounds == 4
    # Seeded: the same rounds, the same interval.
    assert bootstrap_ratio(candidate, reference, resamples=4000, seed=0) == interval


def test_drift_shared_by_both_modes_cancels_in_paired_rounds() -> None:
    drift = [1.0, 1.3, 0.8, 1.5, 1.1, 0.9]  # the machine got slower and faster
    reference = [10.0 * d for d in drift]
    candidate = [11.0 * d for d in drift]  # always 10 % slower in the same round
    interval = bootstrap_ratio(candidate, reference)
    assert interval is not None
    assert interval.low == pytest.approx(1.1) and interval.high == pytest.approx(1.1)


def test_too_few_rounds_give_no_interval() -> None:
    assert bootstrap_ratio([1.0], [1.0]) is None
    assert bootstrap_ratio([1.0, 2.0], [0.0, 0.0]) is None


def _result(mode: str, per_token: list[float], reference: bool = False) -> ModeResult:
    w = bench_workload(1, 8, 5)
    reps = [
        Repetition(0.01, d * 4, 0.01 + d * 4, [d] * 4, round=i) for i, d in enumerate(per_token)
    ]
    run = WorkloadRun(w, "cpu", repetitions=reps, seconds=1.0)
    return build_result(mode, run, None, None, bandwidth_bytes_per_s=None,
                        bandwidth_reason="no GPU", max_spread=0.05)  # fmt: skip


def test_ratios_carry_intervals_over_the_rounds_both_measured() -> None:
    results = [_result("fp16", [0.010, 0.012, 0.011]), _result("int8", [0.030, 0.036])]
    add_ratios(results, "fp16")
    interval = results[1].interval("decode_seconds_per_token")
    assert interval is not None and interval.rounds == 2
    assert interval.ratio == pytest.approx(3.0) and interval.verdict == "higher"
    assert results[0].interval("decode_seconds_per_token") is None  # the reference
    data = results[1].to_dict()["intervals"]["decode_seconds_per_token"]
    assert data["verdict"] == "higher" and data["confidence"] == 0.95


# -- baseline, Markdown, ETA ----------------------------------------------------------------


def _bench(results: list[ModeResult]) -> runner.BenchResult:
    config = BenchConfig(model="m", modes=("fp16", "int8"), prompt_len=8, new_tokens=5)
    bench = runner.BenchResult(config=config, reference="fp16", results=results)
    add_ratios(bench.results, "fp16")
    return bench


def test_a_doctored_baseline_is_a_regression_and_an_honest_one_is_not() -> None:
    now = _bench([_result("fp16", [0.010] * 3), _result("int8", [0.030] * 3)]).to_dict()
    same = json.loads(json.dumps(now))
    changes, unmatched = compare(now, same)
    assert changes and not any(c.regressed for c in changes) and not unmatched
    doctored = json.loads(json.dumps(now))
    doctored["results"][1]["figures"]["decode_seconds_per_token"] = 0.020  # int8 was faster
    changes, _ = compare(now, doctored, threshold=0.10, figures=("decode_seconds_per_token",))
    (regressed,) = [c for c in changes if c.regressed]
    assert regressed.mode == "int8" and regressed.ratio == pytest.approx(1.5)
    assert "REGRESSION" in regressed.line()
    # Within the threshold: not a regression.
    doctored["results"][1]["figures"]["decode_seconds_per_token"] = 0.028
    changes, _ = compare(now, doctored, threshold=0.10, figures=("decode_seconds_per_token",))
    assert not any(c.regressed for c in changes)
    # A rate falling is a regression too.
    doctored["results"][1]["figures"]["decode_tokens_per_second"] = 1000.0
    changes, _ = compare(now, doctored, figures=("decode_tokens_per_second",))
    assert [c.mode for c in changes if c.regressed] == ["int8"]


def test_bad_baselines_are_one_line_errors(tmp_path: Any) -> None:
    (tmp_path / "x.json").write_text("{}", encoding="utf-8")
    (tmp_path / "y.json").write_text("nope", encoding="utf-8")
    with pytest.raises(InputError, match="expected a `gpuinfer bench --output` record"):
        load_baseline(tmp_path / "x.json")
    with pytest.raises(InputError, match="not JSON"):
        load_baseline(tmp_path / "y.json")
    with pytest.raises(InputError, match="No such file"):
        load_baseline(tmp_path / "z.json")
    with pytest.raises(InputError, match="figure 'speed' in --compare-figures"):
        parse_figures("speed")


def test_markdown_summary_and_the_table_width() -> None:
    fp16, int8 = _result("fp16", [0.010, 0.011, 0.012]), _result("int8", [0.030, 0.0305, 0.031])
    bench = _bench([fp16, int8])
    markdown = bench_markdown(bench, ["against the baseline b.json (threshold 10%): no regression"])
    lines = markdown.splitlines()
    assert lines[0] == "## gpuinfer bench"
    header = next(i for i, line in enumerate(lines) if line.startswith("| mode |"))
    assert lines[header + 1] == "|" + "---|" * 9
    assert lines[header + 2].startswith("| fp16 (ref) | 1 | measured | 11.00 |")
    assert "| int8 | 1 | measured | 30.50 |" in lines[header + 3]
    assert "x [" in lines[header + 3] and lines[header + 3].endswith("| slower |")
    assert "### against the baseline" in markdown
    text = bench_text(bench)
    assert max(map(len, text.splitlines())) <= WIDTH
    assert "slower" in text


def test_a_noisy_run_s_wider_figures_still_fit_the_default_width() -> None:
    # Wild repetitions widen the interval columns; the tables close their gaps to one
    # space rather than pass WIDTH (a loaded CPU run once printed 121 columns).
    fp16 = _result("fp16", [0.00001, 0.00002, 0.000015, 0.5])
    int8 = _result("int8", [100.0, 300.0, 50.0, 0.0001])
    text = bench_text(_bench([fp16, int8]))  # 123 columns with two-space gaps
    assert max(map(len, text.splitlines())) <= WIDTH, text


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0.4, "0s"), (12, "12s"), (75, "1m15s"), (3700, "1h01m")]
)
def test_eta_reads_like_a_clock(seconds: float, shown: str) -> None:
    assert format_eta(seconds) == shown


def test_eta_counts_the_rounds_left_and_the_workloads_after() -> None:
    # 2 of 5 rounds done at 2 s each, one more workload of 5 rounds: 6 s + 10 s.
    assert runner._eta([2.0, 2.0], 2, 5, 0, 2) == "16s"
    assert runner._eta([], 0, 5, 0, 1) is None


def test_progress_line_shows_the_eta() -> None:
    import io

    stream = io.StringIO()
    Progress(stream, enabled=True).phase("b1 round 1: fp16 13.3 ms/token", eta="1m05s")
    assert stream.getvalue().rstrip().endswith("b1 round 1: fp16 13.3 ms/token  [ETA 1m05s]")


# -- the compile recipe ---------------------------------------------------------------------


def test_compiled_generate_uses_transformers_own_compile_path() -> None:
    pytest.importorskip("transformers")
    from transformers import CompileConfig

    from pytest_gpuinfer.bench.measure import compiled_kwargs, generate_kwargs

    class Model:
        generation_config = None

    kwargs = generate_kwargs(Model(), bench_workload(1, 8, 4), compiled=True)
    assert kwargs["cache_implementation"] == "static"
    assert isinstance(kwargs["compile_config"], CompileConfig)
    assert kwargs["compile_config"].mode == "reduce-overhead"  # CUDA graphs
    assert "cache_implementation" not in generate_kwargs(Model(), bench_workload(1, 8, 4))
    assert set(compiled_kwargs()) == {"cache_implementation", "compile_config"}


def test_a_row_below_the_mbu_target_says_where_its_step_goes() -> None:
    # The H200's compiled fp16 row (docs/gpu-results.md, round 3, call D): 2.97 ms/step,
    # floor 0.458 ms, 1.65 ms of it in 479 kernels.
    fp16 = _result("fp16", [0.002973] * 3)
    fp16.floor_seconds_per_token, fp16.mbu = 0.000458, 0.000458 / 0.002973
    fp16.time_split = {
        "available": True,
        "gpu_kernel_seconds_per_step": 0.0016516,
        "kernels_per_step": 479.27,
        "gpu_busy_share": 0.5556,
        "host_seconds_per_step": 0.001321,
    }
    text = " ".join(bench_text(_bench([fp16])).split())
    assert "fp16 b1: MBU 15.4%: the GPU is busy 55.6% of the decode step" in text
    assert "host 1.32 ms/step" in text
    assert "the kernels alone take 1.65 ms (MBU 27.7% by kernel time; 479 kernels/step" in text
    # Without the split, the peak's one-line reading, pointing at the split.
    fp16.time_split = None
    text = " ".join(bench_text(_bench([fp16])).split())
    assert "peaks at 15.4%: plain generate() is bound by the host" in text
    assert "without --no-split" in text
    # At the target or above: no reason asked for.
    fp16.mbu = 0.45
    assert "peaks at 45.0% of the bandwidth floor" in " ".join(bench_text(_bench([fp16])).split())


# -- --precision: rounds until the ratios are pinned down -----------------------------------


def _reps(per_token: list[float], new_tokens: int = 4) -> list[Repetition]:
    steps = new_tokens - 1
    return [
        Repetition(0.01, d * steps, 0.01 + d * steps, [d] * steps, round=i)
        for i, d in enumerate(per_token)
    ]


def test_a_constant_ratio_is_pinned_at_once_and_noise_is_not() -> None:
    steady = {"fp16": _reps([0.01] * 4), "int8": _reps([0.03] * 4)}
    check = check_precision(steady, "fp16", 4, target=0.05, seconds=1.0, rounds=4)
    assert check.reached and check.widest_mode == "int8" and check.widest_half_width == 0
    noisy = {**steady, "nf4": _reps([0.02, 0.03, 0.02, 0.03])}
    check = check_precision(noisy, "fp16", 4, target=0.05, seconds=1.0, rounds=4)
    assert not check.reached and check.widest_mode == "nf4"
    assert check.widest_half_width is not None and check.widest_half_width > 0.1
    # 1/sqrt(n): a half-width twice the target needs four times the rounds.
    twice = PrecisionCheck(0.05, 10, 5.0, "nf4", 0.10, reached=False)
    assert twice.rounds_needed() == 40
    # Where to stop: the estimate (40) while the time allows it, the time's worth (10 rounds
    # in 5 s -> 20 in 10 s) when not, this round when out of time, one more at least.
    assert twice.stop_at(60.0) == 40 and twice.stop_at(10.0) == 20 and twice.stop_at(5.0) == 10
    assert PrecisionCheck(0.05, 10, 5.0, "nf4", 0.051, reached=False).stop_at(60.0) == 11
    assert "NOT reached for b1 in 5 s (10 rounds; widest: nf4 +-10.0%)" in twice.line("b1")
    # One round has no interval: not reached, said so.
    single = {"fp16": _reps([0.01]), "int8": _reps([0.03])}
    check = check_precision(single, "fp16", 4, target=0.05, seconds=0.1, rounds=1)
    assert not check.reached and check.widest_half_width is None
    assert "widest: no interval" in check.line("b1")
    # Only the reference: nothing to pin down.
    assert check_precision({"fp16": _reps([0.01] * 3)}, "fp16", 4, target=0.05,
                           seconds=1.0, rounds=3).reached  # fmt: skip


def _precision_run(
    monkeypatch: pytest.MonkeyPatch, spread: float, repetitions: Repetitions
) -> runner.BenchResult:
    log: list[tuple[str, ...]] = []
    children: list[ModeProcess] = [
        _FakeChild("fp16", log, 0.03, spread=spread),
        _FakeChild("int8", log, 0.09, spread),
    ]
    monkeypatch.setattr(runner, "_ask", lambda child, watch, all_, *cmd: _answer(child, *cmd))
    clock = iter(range(10**6))  # one second per reading of the clock
    monkeypatch.setattr(time, "perf_counter", lambda: float(next(clock)))
    config = BenchConfig(
        model="m", modes=("fp16", "int8"), prompt_len=8, new_tokens=4, repetitions=repetitions
    )
    result = runner.BenchResult(config=config, reference="fp16")
    runner._measure_workload(
        0, config.workloads()[0], config, children, GpuWatch(None, None), Progress(enabled=False),
        result,
    )  # fmt: skip
    return result


def test_precision_adds_rounds_until_every_ratio_is_within_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = _precision_run(monkeypatch, 0.2, Repetitions(0, 4, 0.0, precision=0.05))
    check = result.precision[0]
    assert check.reached and check.widest_mode == "int8"
    assert check.widest_half_width is not None and check.widest_half_width <= 0.05
    assert result.rounds[0] > 4  # +-20 % noise is not pinned to 5 % by the minimum
    assert check.rounds == result.rounds[0]
    run = result.to_dict()["run"]
    assert run["precision"] == 0.05 and run["precision_checks"][0]["reached"] is True
    # Without --precision the same noise stops at the minimum, as before.
    plain = _precision_run(monkeypatch, 0.2, Repetitions(0, 4, 0.0))
    assert plain.rounds[0] == 4 and plain.precision == {}


def test_precision_stops_at_max_seconds_and_says_it_was_not_reached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = _precision_run(
        monkeypatch, 0.4, Repetitions(0, 3, 0.0, precision=0.01, max_seconds=30.0)
    )
    check = result.precision[0]
    assert not check.reached and check.seconds >= 30.0
    assert check.seconds < 40.0  # stopped at the cap, within one round of readings
    text = " ".join(bench_text(result).split())
    assert "precision +-1% NOT reached for b1 in" in text and "raise --max-seconds" in text


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"precision": 0.0}, "precision 0.0: expected a fraction between 0 and 1"),
        ({"precision": 5.0}, "precision 5.0: expected a fraction between 0 and 1"),
        ({"precision": float("nan")}, "precision nan: expected a fraction"),
        ({"max_seconds": 0.0}, "maximum seconds 0.0: expected a number > 0"),
        (
            {"precision": 0.05, "min_seconds": 20.0, "max_seconds": 10.0},
            "maximum seconds 10 is below the minimum 20",
        ),
    ],
)
def test_bad_precision_settings_are_one_line_errors(values: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        Repetitions(**values)


# -- re-entering a mode: the round's own warm-up --------------------------------------------


def test_a_round_s_warm_up_calls_run_untimed_before_its_repetitions() -> None:
    pytest.importorskip("torch", reason="generates with the tiny model (torch not installed)")
    from pytest_gpuinfer.bench.measure import WorkloadSession
    from pytest_gpuinfer.loading import load_model
    from pytest_gpuinfer.tiny_models import trained_model_path

    loaded = load_model(str(trained_model_path()), "fp32", device_map="cpu")
    session = WorkloadSession(loaded.model, bench_workload(1, 8, 4))
    calls: list[str] = []
    generate = loaded.model.generate

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append("generate")
        return generate(*args, **kwargs)

    loaded.model.generate = counting
    reps = session.measure(2, round_index=5, settle=3)
    assert len(calls) == 5  # 3 un-timed, then the 2 timed
    assert [r.round for r in reps] == [5, 5] and len(session.run.repetitions) == 2
    calls.clear()
    session.measure(1, round_index=6)
    assert len(calls) == 1  # no settle asked: none made


def test_a_slow_first_repetition_per_round_is_measured_and_named() -> None:
    w = bench_workload(1, 8, 5)
    # Rounds of three: the first one 1.25x the two after it, in every round.
    per_token = [d for _ in range(4) for d in (0.0125, 0.010, 0.010)]
    reps = [
        Repetition(0.01, d * 4, 0.01 + d * 4, [d] * 4, round=i // 3)
        for i, d in enumerate(per_token)
    ]
    assert first_in_round_ratio(reps) == pytest.approx(1.25)
    run = WorkloadRun(w, "cpu", repetitions=reps, seconds=1.0)
    result = build_result("int8", run, None, None, bandwidth_bytes_per_s=None,
                          bandwidth_reason="no GPU", max_spread=0.05)  # fmt: skip
    (note,) = [n for n in result.notes if "first repetition" in n]
    assert "int8 b1: the first repetition of each round decodes 1.25x" in note
    assert "--round-warmup 1" in note
    # One repetition per round has nothing to compare; a steady run says nothing.
    assert first_in_round_ratio(reps[::3]) is None
    steady = [Repetition(0.01, 0.04, 0.05, [0.01] * 4, round=i // 3) for i in range(6)]
    quiet = build_result("fp16", WorkloadRun(w, "cpu", repetitions=steady, seconds=1.0), None,
                         None, bandwidth_bytes_per_s=None, bandwidth_reason="no GPU",
                         max_spread=0.05)  # fmt: skip
    assert not [n for n in quiet.notes if "first repetition" in n]

"""Benchmark: does a suite of 20 tests sharing one model pay for one load only?

Runs three generated suites of 20 tests in pytest subprocesses, each test doing the same
forward passes on the same model and mode:

- ``fixture``: every test calls the ``load_model`` fixture (the session cache);
- ``baseline``: the model is loaded once at import, by hand (one load + the tests' work);
- ``uncached``: every test calls ``pytest_gpuinfer.loading.load_model`` itself.

Prints the median of ``--runs`` session times (pytest_sessionstart to sessionfinish, so
interpreter start-up and the torch/transformers imports are left out) and the
fixture/baseline ratio (target <= 1.3). Then prints the fp16/int8 footprint ratio of
each tiny architecture, loaded on this machine. Stores nothing.

    python benchmarks/bench_model_cache.py [--mode fp32] [--runs 3] [--tests 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

CONFTEST = """
import time
from pytest_gpuinfer import probes
import torch  # imported before the session starts: the times leave imports out
import transformers

MODEL = {model!r}
MODE = {mode!r}
TIMES = {times!r}

def machine_report():
    return probes.probe()

def pytest_sessionstart(session):
    session.config._bench_started = time.perf_counter()

def pytest_sessionfinish(session):
    elapsed = time.perf_counter() - session.config._bench_started
    with open(TIMES, "a") as out:
        out.write(f"{{elapsed}}\\n")
"""

WORK = """
import torch

def work(model):
    ids = torch.arange(1, 65).reshape(2, 32).to(model.device)
    with torch.no_grad():
        model(input_ids=ids)
"""

SUITES = {
    "fixture": WORK
    + """
from conftest import MODEL, MODE

{tests}
""",
    "baseline": WORK
    + """
from conftest import MODEL, MODE, machine_report
from pytest_gpuinfer.loading import load_model

LOADED = load_model(MODEL, MODE, report=machine_report())

{tests}
""",
    "uncached": WORK
    + """
from conftest import MODEL, MODE, machine_report
from pytest_gpuinfer.loading import load_model

REPORT = machine_report()

{tests}
""",
}

TEST_BODIES = {
    "fixture": "def test_{i}(load_model):\n    work(load_model(MODEL, MODE).model)\n",
    "baseline": "def test_{i}():\n    work(LOADED.model)\n",
    "uncached": "def test_{i}():\n    work(load_model(MODEL, MODE, report=REPORT).model)\n",
}


def write_benchmark_model(directory: Path) -> Path:
    """A Llama-shaped model large enough for its load time to show (~3M parameters)."""
    from pytest_gpuinfer.tiny_models import write_tiny_model

    sizes = {"hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 4}
    sizes |= {"num_attention_heads": 8, "num_key_value_heads": 4}
    return write_tiny_model("llama", directory, config_overrides=sizes)


def run_suite(kind: str, root: Path, model: Path, mode: str, tests: int) -> float:
    suite = root / kind
    suite.mkdir(exist_ok=True)
    times = suite / "times.txt"
    conftest = CONFTEST.format(model=str(model), mode=mode, times=str(times))
    (suite / "conftest.py").write_text(textwrap.dedent(conftest))
    body = "\n\n".join(TEST_BODIES[kind].format(i=i) for i in range(tests))
    (suite / f"test_{kind}.py").write_text(SUITES[kind].format(tests=body))
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore"]
    if kind == "fixture":
        args.append("--gpuinfer")
    # One thread per run: on a shared machine it keeps the runs comparable.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*args, str(suite)], cwd=suite, capture_output=True, text=True, timeout=600, env=env
    )
    if done.returncode != 0:
        raise SystemExit(f"{kind} suite failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return float(times.read_text().split()[-1])


def footprints() -> None:
    from pytest_gpuinfer import probes
    from pytest_gpuinfer.loading import load_model
    from pytest_gpuinfer.tiny_models import ARCHITECTURES, write_tiny_model

    report = probes.probe()
    tasks = {"causal-lm": "causal-lm", "seq2seq-lm": "seq2seq-lm", "encoder": "encoder"}
    print("\nfp16/int8 footprint (model.get_memory_footprint(), int8 on this machine)")
    print(f"{'architecture':<14}{'fp16 bytes':>12}{'int8 bytes':>12}{'ratio':>8}")
    with tempfile.TemporaryDirectory() as scratch:
        for name, spec in ARCHITECTURES.items():
            path = write_tiny_model(name, Path(scratch) / name, task=spec.task)
            task = tasks[spec.task]
            fp16 = load_model(path, "fp16", task=task, report=report).footprint_bytes
            if not report.verdicts["int8"].ok:
                print(f"{name:<14}{fp16:>12}  int8 unavailable: {report.verdicts['int8'].reason}")
                continue
            int8 = load_model(path, "int8", task=task, report=report).footprint_bytes
            print(f"{name:<14}{fp16:>12}{int8:>12}{fp16 / int8:>8.2f}")


def main() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="fp32")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tests", type=int, default=20)
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        model = write_benchmark_model(root / "model")
        started = time.perf_counter()
        print(f"{options.tests} tests, mode {options.mode}, median of {options.runs} runs")
        kinds = ("baseline", "fixture", "uncached")
        seconds: dict[str, list[float]] = {kind: [] for kind in kinds}
        # Interleaved rounds, so that load from other processes hits every kind alike.
        for _ in range(options.runs):
            for kind in kinds:
                seconds[kind].append(run_suite(kind, root, model, options.mode, options.tests))
        medians = {kind: statistics.median(seconds[kind]) for kind in kinds}
        for kind in kinds:
            shown = ", ".join(f"{s:.2f}" for s in seconds[kind])
            print(f"{kind:<10} median {medians[kind]:.2f} s  ({shown})")
        ratio = medians["fixture"] / medians["baseline"]
        verdict = "ok" if ratio <= 1.3 else "ABOVE TARGET"
        print(f"fixture / baseline = {ratio:.2f} (target <= 1.3: {verdict})")
        print(f"uncached / baseline = {medians['uncached'] / medians['baseline']:.2f}")
        print(f"(benchmark wall time {time.perf_counter() - started:.0f} s)")
    footprints()


if __name__ == "__main__":
    main()

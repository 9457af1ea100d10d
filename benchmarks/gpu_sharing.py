"""One worker per GPU vs several per GPU (``--gpuinfer-share``): wall clock and peak memory.

Generates a suite of N tests that each load a small Llama-shaped model through the
plugin's ``load_model`` (fp16, cached per worker), generate a few tokens on a batch, do
some host-side checking, and declare ``free_memory``; records each test's own CUDA peak.
Runs it with ``-n auto`` (one worker per GPU) and with ``-n auto --gpuinfer-share S``,
samples every GPU's used memory through NVML meanwhile, and prints a table last:
workers, wall seconds, outcomes, peak memory per GPU, the largest per-test peak against
the declaration, and any CUDA out-of-memory. Logs and JSON go to ``$OUT`` (or ``--out``).

    python benchmarks/gpu_sharing.py                 # the GPU machine (~2-3 minutes)
    python benchmarks/gpu_sharing.py --tiny --tests 6 --declared none --workers 2  # CPU smoke
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GiB = 2**30

LLAMA_SMALL = {
    "vocab_size": 32000,
    "hidden_size": 768,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_key_value_heads": 4,
    "max_position_embeddings": 1024,
    "tie_word_embeddings": False,
}
"""About 150M parameters: 0.3 GB in fp16, the size of model a unit-test suite loads."""

TEST_FILE = """
import json, os, time
import pytest

MODEL = {model!r}
BATCH, PROMPT, NEW, HOST_SECONDS = {batch}, {prompt}, {new}, {host_seconds}

@pytest.mark.parametrize("case", range({start}, {stop}))
{mark}
def test_generate(case, load_model):
    import torch

    loaded = load_model(MODEL, "fp16" if torch.cuda.is_available() else "fp32")
    model = loaded.model
    generator = torch.Generator().manual_seed(case)
    ids = torch.randint(5, model.config.vocab_size, (BATCH, PROMPT), generator=generator)
    ids = ids.to(loaded.input_device)
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False)
    assert out.shape == (BATCH, PROMPT + NEW)
    # Host-side work a real test does between GPU calls (decoding, comparing, logging).
    rows = out.tolist()
    checksum, deadline = 0, time.perf_counter() + HOST_SECONDS
    while time.perf_counter() < deadline:
        checksum += sum(sum(row) % 9973 for row in rows)
    assert checksum >= 0
    peak = torch.cuda.max_memory_reserved() if torch.cuda.is_available() else 0
    with open(os.environ["SHARING_BENCH_PEAKS"], "a") as stream:
        stream.write(json.dumps({{"case": case, "peak": peak,
                                  "worker": os.environ.get("PYTEST_XDIST_WORKER"),
                                  "cvd": os.environ.get("CUDA_VISIBLE_DEVICES")}}) + "\\n")
"""


class NvmlSampler(threading.Thread):
    """Every GPU's used memory, sampled every ``interval`` seconds; keeps the peak."""

    def __init__(self, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peaks: list[int] = []
        self.error: str | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            handles = [
                pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())
            ]
            self.peaks = [0] * len(handles)
            while not self._stop_event.is_set():
                for i, handle in enumerate(handles):
                    used = int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
                    self.peaks[i] = max(self.peaks[i], used)
                time.sleep(self.interval)
            pynvml.nvmlShutdown()
        except Exception as error:  # no driver: the CPU smoke run
            self.error = f"{type(error).__name__}: {error}"

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


def _write_suite(directory: Path, model: Path, args: argparse.Namespace) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pytest.ini").write_text(
        "[pytest]\naddopts = -p no:randomly -p no:cacheprovider\n"
    )
    per_file = 8
    for number, start in enumerate(range(0, args.tests, per_file)):
        stop = min(args.tests, start + per_file)
        (directory / f"test_gen_{number:03d}.py").write_text(
            TEST_FILE.format(
                model=str(model),
                batch=args.batch,
                prompt=args.prompt,
                new=args.new_tokens,
                host_seconds=args.host_ms / 1000,
                start=start,
                stop=stop,
                mark=(
                    f"@pytest.mark.gpuinfer(free_memory={args.declared!r})"
                    if args.declared != "none"
                    else ""
                ),
            )
        )


def _plugin_args() -> list[str]:
    installed = any(ep.name == "gpuinfer" for ep in metadata.entry_points(group="pytest11"))
    return [] if installed else ["-p", "pytest_gpuinfer.plugin"]


def _run(name: str, extra: list[str], suite: Path, out: Path) -> dict[str, Any]:
    peaks_file = out / f"{name}-peaks.jsonl"
    peaks_file.unlink(missing_ok=True)
    report = out / f"{name}-report.json"
    env = dict(os.environ, SHARING_BENCH_PEAKS=str(peaks_file))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    command = [
        sys.executable,
        "-m",
        "pytest",
        *_plugin_args(),
        "--gpuinfer",
        "-rfE",
        "--gpuinfer-report",
        str(report),
        *extra,
        str(suite),
    ]
    sampler = NvmlSampler()
    sampler.start()
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    sampler.stop()
    log = done.stdout + done.stderr
    (out / f"{name}.log").write_text("$ " + " ".join(command) + "\n" + log)
    summary: dict[str, int] = {}
    if report.exists():
        summary = json.loads(report.read_text()).get("summary", {})
    header = [line for line in log.splitlines() if line.startswith("gpuinfer: xdist")]
    test_peaks = (
        [json.loads(line) for line in peaks_file.read_text().splitlines()]
        if (peaks_file.exists())
        else []
    )
    return {
        "name": name,
        "command": command,
        "exit": done.returncode,
        "wall_seconds": round(wall, 2),
        "summary": summary,
        "policy": header[0] if header else None,
        "workers": len({p["worker"] for p in test_peaks}),
        "gpu_peak_bytes": sampler.peaks,
        "nvml_error": sampler.error,
        "max_test_peak_bytes": max((p["peak"] for p in test_peaks), default=0),
        "out_of_memory": log.lower().count("out of memory"),
    }


def _gib(size: int) -> str:
    return f"{size / GiB:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu_sharing_out"))
    parser.add_argument("--tests", type=int, default=192)
    parser.add_argument("--share", type=int, default=4, help="--gpuinfer-share for run 2")
    parser.add_argument(
        "--declared", default="4GiB", help="each test's free_memory ('none': no marker)"
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument(
        "--host-ms", type=int, default=100, help="host-side Python work per test (ms)"
    )
    parser.add_argument("--tiny", action="store_true", help="the shipped tiny LM (CPU smoke)")
    parser.add_argument("--workers", default="auto", help="-n for both runs (default auto)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    sys.path.insert(0, str(REPO))
    from pytest_gpuinfer.tiny_models import trained_model_path, write_tiny_model

    with tempfile.TemporaryDirectory(prefix="gpu-sharing-") as scratch:
        if args.tiny:
            model = trained_model_path()
        else:
            model = write_tiny_model(
                "llama", Path(scratch) / "model", dtype="float16", config_overrides=LLAMA_SMALL
            )
        suite = Path(scratch) / "suite"
        _write_suite(suite, model, args)
        runs = [
            _run("one-per-gpu", ["-n", args.workers], suite, out),
            _run("shared", ["-n", args.workers, "--gpuinfer-share", str(args.share)], suite, out),
        ]
    base, shared = runs
    speedup = base["wall_seconds"] / shared["wall_seconds"] if shared["wall_seconds"] else 0.0
    result = {"runs": runs, "speedup": round(speedup, 2), "declared": args.declared}
    (out / "gpu_sharing.json").write_text(json.dumps(result, indent=2) + "\n")

    gpus = max(len(base["gpu_peak_bytes"]), len(shared["gpu_peak_bytes"]))
    print(f"logs and JSON: {out}")
    for run in runs:
        print(f"{run['name']}: {run['policy'] or 'no xdist policy line'}")
    header = f"{'run':<12}{'workers':>8}{'wall s':>8}{'passed':>8}{'failed':>8}{'OOM':>5}"
    header += "".join(f"{f'GPU{i} peak GiB':>16}" for i in range(gpus))
    header += f"{'max test GiB':>14}"
    print(header)
    for run in runs:
        failed = run["summary"].get("failed", 0) + run["summary"].get("error", 0)
        row = (
            f"{run['name']:<12}{run['workers']:>8}{run['wall_seconds']:>8.1f}"
            f"{run['summary'].get('passed', 0):>8}{failed:>8}{run['out_of_memory']:>5}"
        )
        peaks = run["gpu_peak_bytes"] + [0] * (gpus - len(run["gpu_peak_bytes"]))
        row += "".join(f"{_gib(p):>16}" for p in peaks)
        row += f"{_gib(run['max_test_peak_bytes']):>14}"
        print(row)
    print(f"speed-up with sharing: {speedup:.2f}x (declared {args.declared} per test)")
    ok = all(r["exit"] == 0 and r["out_of_memory"] == 0 for r in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

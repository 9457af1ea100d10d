"""Which prompts the shipped tiny trained LM agrees on, per mode, against its fp32 reference.

The tiny LM (``pytest_gpuinfer/data/tiny-trained-lm``) learned one line by heart. Near that
text its top-1 margins are large and every mode repeats the reference; away from it the
logits are nearly flat and a quantized mode may pick another token. This measures, per
mode and prompt, whether ``assert_generation_close`` (greedy, top-5 near-tie rule)
passes and whether the generated text is identical, so the docs can say which prompts a
test may use. Runs on a CPU (seconds) and on a GPU (device_map="auto").

    OUT=/tmp/out python benchmarks/bench_prompt_agreement.py [--modes fp16,int8,nf4]

Writes ``$OUT/prompt_agreement.json`` (when OUT is set) and prints a table last.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from pytest_gpuinfer.assertions import assert_generation_close
from pytest_gpuinfer.loading import load_model
from pytest_gpuinfer.tiny_models import TRAINED_CONTINUATION, TRAINED_PROMPT, trained_model_path

TRAINING_LINE = TRAINED_PROMPT + TRAINED_CONTINUATION

# From the training line itself, to its neighbourhood, to text it never saw.
PROMPTS: dict[str, str] = {
    "training prompt": TRAINED_PROMPT,
    "training prefix (The quick)": "The quick",
    "training mid-line": TRAINING_LINE[:60],
    "training line, later half": TRAINING_LINE[40:80],
    "one word changed (The slow brown fox)": "The slow brown fox",
    "lower case (the quick brown fox)": "the quick brown fox",
    "A small model": "A small model",
    "Hello, world!": "Hello, world!",
    "Once upon a time": "Once upon a time",
    "The capital of France is": "The capital of France is",
    "numbers (1, 2, 3,)": "1, 2, 3,",
    "def main():": "def main():",
}


def measure(modes: list[str], max_new_tokens: int) -> list[dict[str, Any]]:
    path = str(trained_model_path())
    reference = load_model(path, "fp32", attn_implementation="eager")
    rows: list[dict[str, Any]] = []
    for mode in modes:
        candidate = load_model(path, mode)
        for label, prompt in PROMPTS.items():
            row: dict[str, Any] = {"mode": mode, "prompt": label, "text": prompt}
            try:
                [comparison] = assert_generation_close(
                    reference, candidate, [prompt], max_new_tokens=max_new_tokens
                )
                row["close"] = True
                row["identical"] = comparison.first_divergence is None
            except AssertionError as error:
                row["close"] = False
                row["identical"] = False
                row["failure"] = str(error).splitlines()[0]
            rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--modes", default="fp16,bf16,int8,nf4,fastpath")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    rows = measure(modes, args.max_new_tokens)
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        Path(out, "prompt_agreement.json").write_text(json.dumps(rows, indent=2) + "\n")
    width = max(len(label) for label in PROMPTS)
    print(f"{'prompt':<{width}}  " + "  ".join(f"{m:>8}" for m in modes))
    for label in PROMPTS:
        cells = []
        for mode in modes:
            row = next(r for r in rows if r["mode"] == mode and r["prompt"] == label)
            cells.append("same" if row["identical"] else "close" if row["close"] else "FAIL")
        print(f"{label:<{width}}  " + "  ".join(f"{c:>8}" for c in cells))
    print("same: identical text; close: passes assert_generation_close; FAIL: it fails")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Train the tiny Llama-shaped LM shipped in pytest_gpuinfer/data/tiny-trained-lm/.

The model memorizes one short self-written passage, so that greedy decoding from
``TRAINED_PROMPT`` yields ``TRAINED_CONTINUATION`` and then end-of-sequence. Training adds
a hinge term on the logit margin between the right token and the runner-up, so that the
continuation survives fp16, bf16, int8 and attention-kernel differences.

Reproducible on CPU: fixed seed, deterministic torch ops, one thread. Run from the
repository root:

    python scripts/train_tiny_lm.py

Options: ``--output DIR`` (default: the package data directory), ``--steps N``,
``--no-verify`` (skip the quantized and reduced-precision checks).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from pytest_gpuinfer.tiny_models import (  # noqa: E402
    ARCHITECTURES,
    TRAINED_CONTINUATION,
    TRAINED_PROMPT,
    build_tokenizer,
    save_tokenizer,
    trained_model_path,
)

SEED = 20261125
TARGET_MARGIN = 12.0
MODEL_SHAPE = {
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "tie_word_embeddings": False,
}


def _dtype_kwargs(dtype: Any) -> dict[str, Any]:
    import transformers

    major = int(transformers.__version__.split(".")[0])
    return {"dtype": dtype} if major >= 5 else {"torch_dtype": dtype}


def _sequence(tokenizer: Any) -> list[int]:
    prompt_ids: list[int] = tokenizer(TRAINED_PROMPT).input_ids
    full_ids: list[int] = tokenizer(TRAINED_PROMPT + TRAINED_CONTINUATION).input_ids
    # The byte-level tokenizer has no merges, so the prompt's tokens are a prefix of the
    # full text's: the model sees at inference exactly the context it was trained on.
    assert full_ids[: len(prompt_ids)] == prompt_ids
    return [*full_ids, tokenizer.eos_token_id]


def _margins(model: Any, ids: list[int], prompt_length: int) -> tuple[list[float], bool]:
    """Top-1 minus top-2 logit at each continuation position, and whether top-1 is right."""
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([ids[:-1]], device=model.device)).logits[0].float()
    targets = torch.tensor(ids[1:], device=logits.device)
    top = logits.topk(2, dim=-1)
    margins = (top.values[:, 0] - top.values[:, 1])[prompt_length - 1 :]
    correct = bool((top.indices[:, 0] == targets)[prompt_length - 1 :].all())
    return [float(m) for m in margins], correct


def train(steps: int) -> tuple[Any, Any, float, int]:
    import torch
    import transformers

    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    tokenizer = build_tokenizer("llama")
    ids = _sequence(tokenizer)
    prompt_length = len(tokenizer(TRAINED_PROMPT).input_ids)

    values = ARCHITECTURES["llama"].config_values()
    values.update(MODEL_SHAPE)
    config = transformers.LlamaConfig(**values)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    model.train()

    inputs = torch.tensor([ids[:-1]])
    targets = torch.tensor(ids[1:])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=3e-3, total_steps=steps, pct_start=0.1
    )
    started = time.perf_counter()
    for step in range(1, steps + 1):
        logits = model(inputs).logits[0]
        cross_entropy = torch.nn.functional.cross_entropy(logits, targets)
        target_logit = logits.gather(1, targets[:, None])[:, 0]
        others = logits.scatter(1, targets[:, None], float("-inf"))
        margin = target_logit - others.max(dim=-1).values
        hinge = torch.relu(TARGET_MARGIN - margin).mean()
        loss = cross_entropy + hinge
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]  # torch types backward loosely
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == steps:
            print(
                f"step {step:4d}  loss {loss.item():.4f}  ce {cross_entropy.item():.5f}"
                f"  min margin {margin.min().item():.2f}",
                flush=True,
            )
    seconds = time.perf_counter() - started
    model.eval()
    return model, tokenizer, seconds, prompt_length


def greedy_continuation(model: Any, tokenizer: Any, n_tokens: int) -> str:
    import torch

    batch = tokenizer([TRAINED_PROMPT], return_tensors="pt").to(model.device)
    with torch.no_grad():
        output = model.generate(**batch, max_new_tokens=n_tokens + 4, do_sample=False)
    text: str = tokenizer.decode(output[0, batch.input_ids.shape[1] :], skip_special_tokens=True)
    return text


def verify(directory: Path, n_tokens: int, prompt_length: int) -> dict[str, str]:
    """Load the saved model every way this machine allows and check the continuation."""
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    ids = _sequence(tokenizer)
    results: dict[str, str] = {}
    variants: dict[str, dict[str, Any]] = {
        "fp32 eager": {"attn_implementation": "eager", **_dtype_kwargs(torch.float32)},
        "fp32 sdpa": {"attn_implementation": "sdpa", **_dtype_kwargs(torch.float32)},
        "fp16 sdpa (cpu)": {"attn_implementation": "sdpa", **_dtype_kwargs(torch.float16)},
        "bf16 sdpa (cpu)": {"attn_implementation": "sdpa", **_dtype_kwargs(torch.bfloat16)},
    }
    try:
        import bitsandbytes

        print(f"bitsandbytes {bitsandbytes.__version__}")
        # fp16 activations, as LLM.int8 is used; fp32 ones make bitsandbytes log a
        # warning on every matmul.
        variants["int8, fp16 activations (cpu)"] = {
            "quantization_config": transformers.BitsAndBytesConfig(load_in_8bit=True),
            "device_map": "cpu",
            **_dtype_kwargs(torch.float16),
        }
        variants["nf4 (cpu)"] = {
            "quantization_config": transformers.BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_compute_dtype=torch.float32,
            ),
            "device_map": "cpu",
        }
    except ImportError:
        print("bitsandbytes not installed: int8 and nf4 not checked")
    for name, kwargs in variants.items():
        try:
            model = transformers.AutoModelForCausalLM.from_pretrained(directory, **kwargs).eval()
            text = greedy_continuation(model, tokenizer, n_tokens)
            margins, correct = _margins(model, ids, prompt_length)
        except Exception as error:  # a report, not a crash: record what failed and go on
            results[name] = f"failed: {type(error).__name__}: {str(error).splitlines()[0]}"
        else:
            verdict = "ok" if text == TRAINED_CONTINUATION and correct else f"WRONG {text!r}"
            results[name] = f"{verdict}, min margin {min(margins):.2f}"
        print(f"{name:30s} {results[name]}", flush=True)
    return results


README = """\
# tiny-trained-lm

A tiny Llama-shaped causal LM ({parameters:,} parameters, {layers} layers, hidden
{hidden}, {heads} attention heads / {kv_heads} key-value heads, fp32 safetensors) with a
byte-level tokenizer (one token per byte, {vocab} tokens), trained to memorize one
passage. Greedy decoding from the prompt

    {prompt!r}

yields

    {continuation!r}

followed by `</s>`. Used by pytest-gpuinfer's tests to check that a model loaded in a
given mode (fp16, bf16, int8, nf4, SDPA or eager attention) still computes the right
thing: a random tiny model has near-ties between logits, so exact-match generation on it
is flaky; this one does not.

## The text

Written for this project (the first clause is the traditional typing pangram "The quick
brown fox jumps over the lazy dog", which is in the public domain). No other source.

## How it was made

    {command}

{steps} steps of AdamW on the single sequence, cross-entropy plus a hinge loss pushing
the top-1 minus top-2 logit margin towards {target_margin}; seed {seed}, deterministic
torch ops, one CPU thread. Training took {seconds:.0f} s on CPU ({torch} / transformers
{transformers}).

## Measured

Minimum top-1 minus top-2 logit margin along the continuation (teacher-forced), and
whether greedy generation reproduces the continuation, on CPU:

{results}

Also seen on an NVIDIA H100 (torch 2.11.0+cu130, transformers 5.17.0, bitsandbytes
0.50.2, 2026-11-25; not re-measured by this script): fp32 / fp16 / bf16 with SDPA, fp16
eager, int8 and nf4 (fp16 compute) all reproduce the continuation, also as the
left-padded row of a batch; minimum margin 12.32 (nf4) to 12.44 (fp32).
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=trained_model_path())
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--no-verify", action="store_true")
    args = parser.parse_args(argv)

    import torch
    import transformers

    model, tokenizer, seconds, prompt_length = train(args.steps)
    ids = _sequence(tokenizer)
    margins, correct = _margins(model, ids, prompt_length)
    n_tokens = len(ids) - prompt_length
    text = greedy_continuation(model, tokenizer, n_tokens)
    print(f"trained in {seconds:.1f} s; min margin {min(margins):.2f}; continuation {text!r}")
    if not correct or text != TRAINED_CONTINUATION:
        print("the model did not memorize the passage; not writing it", file=sys.stderr)
        return 1

    output: Path = args.output
    with tempfile.TemporaryDirectory() as staging_name:
        staging = Path(staging_name)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.do_sample = False
        model.save_pretrained(str(staging))
        tokenizer.model_max_length = MODEL_SHAPE["max_position_embeddings"]
        save_tokenizer(tokenizer, staging)
        # Loaders pick their own attention; the file should not pin the training choice.
        config_path = staging / "config.json"
        saved_config = json.loads(config_path.read_text(encoding="utf-8"))
        saved_config.pop("_attn_implementation", None)
        config_path.write_text(json.dumps(saved_config, indent=2) + "\n", encoding="utf-8")

        results = {"fp32 (as trained)": f"ok, min margin {min(margins):.2f}"}
        if not args.no_verify:
            results.update(verify(staging, n_tokens, prompt_length))

        readme = README.format(
            parameters=sum(p.numel() for p in model.parameters()),
            layers=MODEL_SHAPE["num_hidden_layers"],
            hidden=MODEL_SHAPE["hidden_size"],
            heads=MODEL_SHAPE["num_attention_heads"],
            kv_heads=MODEL_SHAPE["num_key_value_heads"],
            vocab=len(tokenizer),
            prompt=TRAINED_PROMPT,
            continuation=TRAINED_CONTINUATION,
            command="python scripts/train_tiny_lm.py"
            + ("" if args.steps == 600 else f" --steps {args.steps}"),
            steps=args.steps,
            target_margin=TARGET_MARGIN,
            seed=SEED,
            seconds=seconds,
            torch=f"torch {torch.__version__}",
            transformers=transformers.__version__,
            results="\n".join(f"- {name}: {result}" for name, result in results.items()),
        )
        (staging / "README.md").write_text(readme, encoding="utf-8")
        if output.exists():
            shutil.rmtree(output)
        shutil.copytree(staging, output)
    # The staging directory was private (0700); shipped files should be world-readable.
    output.chmod(0o755)
    for path in output.iterdir():
        path.chmod(0o644)
    total = sum(path.stat().st_size for path in output.iterdir())
    print(f"wrote {output} ({total / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Recompute the H100 memory-validation rows' predictions on the CPU with the current estimator.

    python benchmarks/memory_recheck.py --out /tmp/recheck \
        [--measured /work/.device/3/memory_validation.json]

For each row of a ``gpu_memory_validation.py`` result, the same model directory is rebuilt
from ``ARCHS`` in that script: ``config.json`` as ``save_pretrained`` writes it, and a
``model.safetensors`` whose header names every saved tensor with its real shape and dtype
(fp16, as the GPU run saved it) over a sparse, all-zero data area, so building it costs
no memory and almost no disk. The estimate reads only config and headers, so its
prediction is the one the GPU-written checkpoint gave. Prints a table (measured on the GPU,
old prediction from the file, new prediction, error, verdict) and the counts; writes
``recheck.json`` and ``recheck.md`` under ``--out``. A few seconds on a CPU.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_memory_validation import ARCHITECTURES, judge

MiB = 2**20
DEFAULT_MEASURED = "/work/.device/3/memory_validation.json"


def write_header_model(directory: Path, config_values: dict[str, Any]) -> Path:
    """config.json plus a sparse model.safetensors with the saved tensors' real header."""
    import torch
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    directory.mkdir(parents=True, exist_ok=True)
    values = dict(config_values)
    config = CONFIG_MAPPING[values.pop("model_type")](**values)
    config.pad_token_id, config.eos_token_id, config.bos_token_id = 0, 1, 2
    if config.is_encoder_decoder:
        config.decoder_start_token_id = 0
    auto: Any = (
        transformers.AutoModelForSeq2SeqLM
        if config.is_encoder_decoder
        else transformers.AutoModelForCausalLM
    )
    with torch.device("meta"):
        model = auto.from_config(config, dtype=torch.float16)
    # save_pretrained writes a tied parameter once, under its first name.
    names: dict[str, torch.Tensor] = dict(model.named_parameters())
    state = model.state_dict()
    for name, tensor in model.named_buffers():
        if name in state:
            names[name] = tensor
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    tags = {torch.float16: "F16", torch.float32: "F32", torch.bfloat16: "BF16"}
    for name, tensor in names.items():
        size = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": tags[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with (directory / "model.safetensors").open("wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        handle.truncate(8 + len(raw) + offset)  # sparse: the values are never read
    model.config.save_pretrained(directory)
    return directory


def recheck(measured_path: Path) -> list[dict[str, Any]]:
    from pytest_gpuinfer.probes.memory_weights import estimate_model_memory
    from pytest_gpuinfer.probes.memory_workload import Workload, estimate_workload

    rows = json.loads(measured_path.read_text())["rows"]
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="recheck-") as tmp:
        built: dict[str, Any] = {}
        for row in rows:
            if "measured_reserved" not in row:
                continue
            arch = row["arch"]
            if arch not in built:
                directory = write_header_model(Path(tmp) / arch, ARCHITECTURES[arch])
                built[arch] = estimate_model_memory(directory)
            work = Workload(row["batch_size"], row["seq_len"], row["new_tokens"])
            # The attention the GPU run's transformers applied ("... (attention: sdpa)"):
            # defaults differ between versions (Gemma 2: SDPA in 5.17, eager in 5.23).
            applied = str(row.get("applied", ""))
            attention = "eager" if "eager" in applied else "sdpa" if "sdpa" in applied else None
            new = estimate_workload(built[arch], row["mode"], work, attention=attention)
            measured = row["measured_reserved"]
            out.append(
                {
                    "arch": arch,
                    "mode": row["mode"],
                    "workload": row["workload"],
                    "shape": f"{work.batch_size}x{work.seq_len}+{work.new_tokens}",
                    "measured_reserved": measured,
                    "old_predicted_reserved": row["predicted_reserved"],
                    "new_predicted_reserved": new.peak_reserved_bytes,
                    "old_verdict": judge(row["predicted_reserved"], measured),
                    "new_verdict": judge(new.peak_reserved_bytes, measured),
                    "new_error_pct": round(
                        100 * (new.peak_reserved_bytes - measured) / measured, 1
                    ),
                    "new_parts": new.parts(),
                    "new_peak_moment": new.peak_moment,
                    "new_attention": new.attention,
                }
            )
    return out


def _counts(rows: list[dict[str, Any]], key: str) -> dict[str, int]:
    counts = {"ok": 0, "over": 0, "under": 0, "UNDER": 0}
    for row in rows:
        counts[row[key]] += 1
    return counts


def markdown(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| arch | mode | workload | measured MiB (H100) | old pred MiB | new pred MiB "
        "| new error | verdict (old -> new) |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['arch']} | {r['mode']} | {r['workload']} {r['shape']} "
            f"| {r['measured_reserved'] / MiB:.0f} | {r['old_predicted_reserved'] / MiB:.0f} "
            f"| {r['new_predicted_reserved'] / MiB:.0f} | {r['new_error_pct']:+.1f}% "
            f"| {r['old_verdict']} -> {r['new_verdict']} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measured", default=DEFAULT_MEASURED, help="memory_validation.json")
    parser.add_argument("--out", required=True, help="directory for recheck.json/.md")
    args = parser.parse_args()
    measured = Path(args.measured)
    if not measured.is_file():
        print(f"--measured {measured}: no such file (expected a memory_validation.json)")
        return 2
    rows = recheck(measured)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    old, new = _counts(rows, "old_verdict"), _counts(rows, "new_verdict")
    (out / "recheck.json").write_text(json.dumps({"rows": rows, "old": old, "new": new}, indent=1))
    table = markdown(rows)
    summary = f"{len(rows)} rows; old: {old}; new: {new}"
    (out / "recheck.md").write_text("\n".join([*table, "", summary, ""]))
    print(f"{'arch':<16}{'mode':<9}{'work':<6}{'meas':>7}{'old':>7}{'new':>7}{'err':>8}  verdict")
    for r in rows:
        print(
            f"{r['arch']:<16}{r['mode']:<9}{r['workload']:<6}{r['measured_reserved'] / MiB:>7.0f}"
            f"{r['old_predicted_reserved'] / MiB:>7.0f}{r['new_predicted_reserved'] / MiB:>7.0f}"
            f"{r['new_error_pct']:>+7.1f}%  {r['old_verdict']} -> {r['new_verdict']}"
        )
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

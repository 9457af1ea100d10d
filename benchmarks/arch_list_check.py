"""Does the audit's arch-list check agree with what the installed torch reports?

Runs ``gpuinfer audit --verify --json`` in a fresh process with an empty cache (so its
child really reads ``torch.cuda.get_arch_list()``), then asks torch itself in this process
(never the audit's), and compares both with the official build table row for the installed
torch version and CUDA build. Writes ``$OUT/arch_list_check.json`` and prints a short table.

    OUT=/tmp/out python benchmarks/arch_list_check.py

On a machine without a GPU the audit reads no list and the check says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def main() -> int:
    out = Path(os.environ.get("OUT") or ".")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "GPUINFER_CACHE_DIR": cache}
        audit = subprocess.run(
            [sys.executable, "-m", "pytest_gpuinfer.cli", "audit", "--verify", "--json"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
    report: dict[str, Any] = json.loads(audit.stdout)
    audit_list = report["software"].get("torch_arch_list")

    import torch

    from pytest_gpuinfer.probes.builds import torch_release

    torch_list = list(torch.cuda.get_arch_list()) if torch.cuda.is_available() else None
    release, extrapolated = torch_release(torch.__version__)
    cuda = torch.version.cuda
    table = list(release.builds.get(cuda, ())) if release and cuda else None
    result = {
        "torch": torch.__version__,
        "torch_cuda": cuda,
        "gpus": [g.get("name") for g in report["gpus"]],
        "audit_exit_code": audit.returncode,
        "audit_arch_list": audit_list,
        "torch_arch_list": torch_list,
        "table_arch_list": table,
        "table_extrapolated": extrapolated,
        "audit_agrees_with_torch": audit_list == torch_list,
        "table_agrees_with_torch": table == torch_list,
        "verdicts": {m: v["status"] for m, v in report["verdicts"].items()},
        "fp32_reason": report["verdicts"].get("fp32", {}).get("reason"),
    }
    (out / "arch_list_check.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    where = ", ".join(map(str, result["gpus"])) or "no GPU"
    print(f"torch {torch.__version__} (CUDA {cuda}) on {where}")
    print(f"{'source':<28}arch list")
    print(f"{'audit --verify (child)':<28}{audit_list}")
    print(f"{'torch.cuda.get_arch_list()':<28}{torch_list}")
    print(f"{'probes/builds.py table':<28}{table}")
    agree = result["audit_agrees_with_torch"]
    table_agrees = result["table_agrees_with_torch"]
    print(f"audit agrees with torch: {agree}; table agrees with torch: {table_agrees}")
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())

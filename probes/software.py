"""The software stack, read from installed metadata without importing heavy packages.

The one check that needs the packages themselves, "does bitsandbytes' native library
really run an int8 matmul", runs in a child process with a timeout and is cached on disk,
keyed by the versions and the device, because importing torch and bitsandbytes costs
seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from pytest_gpuinfer.probes.report import NativeCheck, SoftwareStack

PACKAGES: tuple[str, ...] = (
    "torch",
    "transformers",
    "accelerate",
    "bitsandbytes",
    "optimum",
    "flash-attn",
    "nvidia-ml-py",
    "pytest",
)
"""Distributions the rules read, by their PyPI names."""

VERIFY_TIMEOUT_SECONDS = 120.0
CACHE_ENV = "GPUINFER_CACHE_DIR"


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _scan_versions(wanted: set[str]) -> dict[str, tuple[str, str]]:
    """Versions from ``NAME-VERSION.dist-info`` directory names along sys.path.

    One directory listing per path entry instead of parsing each METADATA file (which
    importlib.metadata does, and which costs milliseconds per package); the first hit
    along sys.path wins, as it does for imports.
    """
    found: dict[str, tuple[str, str]] = {}
    for entry in sys.path:
        try:
            with os.scandir(entry or ".") as listing:
                names = [e.name for e in listing if e.name.endswith(".dist-info")]
        except OSError:
            continue
        for name in names:
            stem = name[: -len(".dist-info")]
            dist, sep, version = stem.partition("-")
            key = _normalize(dist)
            if sep and key in wanted and key not in found:
                found[key] = (version, entry or ".")
        if len(found) == len(wanted):
            break
    return found


def _torch_build(site: str | None) -> tuple[str | None, str | None, str | None]:
    """(cuda, hip, reason-if-unknown) from torch/version.py, read as text, not imported."""
    if site is None:
        return None, None, None
    try:
        text = (Path(site) / "torch" / "version.py").read_text(encoding="utf-8")
    except OSError as error:
        return None, None, f"cannot read torch/version.py: {error.strerror or error}"
    values: dict[str, str | None] = {}
    for key in ("cuda", "hip"):
        match = re.search(rf"^{key}\s*(?::[^=]*)?=\s*(.+)$", text, re.MULTILINE)
        raw = match.group(1).strip() if match else "None"
        values[key] = None if raw == "None" else raw.strip("'\"")
    return values["cuda"], values["hip"], None


def probe_software() -> SoftwareStack:
    """Versions of Python, the Hugging Face stack and torch's CUDA build. Never raises."""
    scanned = _scan_versions({_normalize(name) for name in PACKAGES})
    packages = {
        name: scanned[_normalize(name)][0] if _normalize(name) in scanned else None
        for name in PACKAGES
    }
    torch_site = scanned["torch"][1] if "torch" in scanned else None
    cuda, hip, reason = _torch_build(torch_site)
    unknown = {"torch_cuda": reason} if reason else {}
    return SoftwareStack(
        python=platform.python_version(),
        platform=f"{platform.system()}-{platform.machine()}",
        packages=packages,
        torch_cuda=cuda,
        torch_hip=hip,
        unknown=unknown,
    )


# Runs in a child process: it may initialise CUDA, which the caller must never do.
_INT8_CHECK = r"""
import json, sys
device = sys.argv[1]
result = {"state": "failed", "detail": ""}
try:
    import torch
    import bitsandbytes as bnb
    torch.manual_seed(0)
    dtype = torch.float16 if device == "cuda" else torch.float32
    layer = bnb.nn.Linear8bitLt(64, 32, bias=False, has_fp16_weights=False, threshold=6.0)
    reference = torch.nn.Linear(64, 32, bias=False)
    layer.weight = bnb.nn.Int8Params(reference.weight.data.clone(), requires_grad=False,
                                     has_fp16_weights=False)
    layer = layer.to(device)
    x = torch.randn(8, 64)
    expected = reference(x)
    with torch.no_grad():
        got = layer(x.to(device=device, dtype=dtype)).float().cpu()
    error = ((got - expected).abs().max() / expected.abs().max()).item()
    if layer.weight.dtype != torch.int8:
        result["detail"] = f"weight dtype is {layer.weight.dtype}, expected torch.int8"
    elif not error < 0.05:
        result["detail"] = f"int8 matmul relative error {error:.3g} exceeds 0.05"
    else:
        detail = f"int8 matmul on {device}, relative error {error:.2g}"
        result = {"state": "passed", "detail": detail}
except Exception as exc:  # the child reports any failure as data
    line = (str(exc).strip().splitlines() or [""])[0][:300]
    result["detail"] = f"{type(exc).__name__}: {line}"
print("GPUINFER_RESULT " + json.dumps(result))
"""


def _cache_dir(environ: Mapping[str, str]) -> Path:
    if environ.get(CACHE_ENV):
        return Path(environ[CACHE_ENV])
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pytest-gpuinfer"


def _cache_key(stack: SoftwareStack, device: str, device_id: str | None) -> str:
    parts = [
        stack.python,
        stack.packages.get("torch") or "",
        stack.packages.get("bitsandbytes") or "",
        stack.torch_cuda or "",
        device,
        device_id or "",
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def verify_bitsandbytes(
    stack: SoftwareStack,
    *,
    device: str,
    device_id: str | None = None,
    environ: Mapping[str, str] | None = None,
    use_cache: bool = True,
    timeout: float = VERIFY_TIMEOUT_SECONDS,
) -> NativeCheck:
    """Run one tiny int8 matmul through bitsandbytes in a child process.

    ``device`` is "cuda" or "cpu"; ``device_id`` (a GPU UUID) keys the cache. Recent
    bitsandbytes imports fine even when its native library failed to load, so only a
    real matmul tells.
    """
    env = dict(os.environ if environ is None else environ)
    if not stack.packages.get("bitsandbytes"):
        return NativeCheck(state="failed", detail="bitsandbytes is not installed", device=device)
    cache_file = _cache_dir(env) / f"bnb-{_cache_key(stack, device, device_id)}.json"
    if use_cache:
        try:
            cached = json.loads(cache_file.read_text(encoding="utf-8"))
            return NativeCheck(
                state=cached["state"], detail=cached["detail"], cached=True, device=device
            )
        except (OSError, ValueError, KeyError, TypeError):
            pass
    if device_id and device == "cuda" and device_id.startswith(("GPU-", "MIG-")):
        env["CUDA_VISIBLE_DEVICES"] = device_id
    started = time.perf_counter()
    try:
        completed = subprocess.run(
            [sys.executable, "-c", _INT8_CHECK, device],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return NativeCheck(
            state="failed", detail=f"int8 check timed out after {timeout:.0f} s", device=device
        )
    except OSError as error:
        return NativeCheck(state="failed", detail=f"cannot start Python: {error}", device=device)
    elapsed = time.perf_counter() - started
    marker = [ln for ln in completed.stdout.splitlines() if ln.startswith("GPUINFER_RESULT ")]
    if not marker:
        tail = (completed.stderr.strip().splitlines() or ["no output"])[-1][:300]
        check = NativeCheck(
            state="failed",
            detail=f"int8 check exited with code {completed.returncode}: {tail}",
            device=device,
        )
    else:
        data = json.loads(marker[-1].removeprefix("GPUINFER_RESULT "))
        detail = f"{data['detail']} ({elapsed:.1f} s)"
        check = NativeCheck(state=data["state"], detail=detail, device=device)
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        payload = {"state": check.state, "detail": check.detail}
        cache_file.write_text(json.dumps(payload), encoding="utf-8")
    except OSError:
        pass  # an unwritable cache costs a re-run next time, nothing more
    return check

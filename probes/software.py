"""The software stack, read from installed metadata without importing heavy packages.

The two checks that need the packages themselves, "does bitsandbytes' native library
really run an int8 matmul" and "which GPU architectures does the installed torch build
target" (``torch.cuda.get_arch_list()``), run in one child process with a timeout and are
cached on disk, keyed by the versions and the device, because importing torch and
bitsandbytes costs seconds and initialising CUDA in the caller breaks forked workers.
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
# argv: device ("cuda"/"cpu"), "1" to run the int8 matmul, "1" to read torch's arch list.
_CHILD_CHECK = r"""
import json, sys
device, want_int8, want_arch = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1"
result = {"state": "failed", "detail": "", "arch_list": None}
def first_line(exc):
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"
if want_arch:
    try:
        import torch
        if torch.cuda.is_available():
            result["arch_list"] = list(torch.cuda.get_arch_list())
    except Exception as exc:  # the child reports any failure as data
        result["arch_error"] = first_line(exc)
if want_int8:
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
            result["state"] = "passed"
            result["detail"] = f"int8 matmul on {device}, relative error {error:.2g}"
    except Exception as exc:  # the child reports any failure as data
        result["detail"] = first_line(exc)
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


def _arch_cache_key(stack: SoftwareStack) -> str:
    parts = [stack.python, stack.packages.get("torch") or "", stack.torch_cuda or "", "arch"]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def _read_json(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, payload: dict[str, object]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload), encoding="utf-8")
    except OSError:
        pass  # an unwritable cache costs a re-run next time, nothing more


def _arch_list_from(data: dict[str, object] | None) -> list[str] | None:
    value = data.get("arch_list") if data else None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def cached_arch_list(
    stack: SoftwareStack, *, environ: Mapping[str, str] | None = None
) -> list[str] | None:
    """The installed torch's arch list as an earlier ``--verify`` read it; None if not cached.

    A file read only: the audit without ``--verify`` stays free of torch imports.
    """
    if not stack.packages.get("torch") or stack.torch_cuda is None:
        return None
    env = os.environ if environ is None else environ
    path = _cache_dir(env) / f"torch-{_arch_cache_key(stack)}.json"
    return _arch_list_from(_read_json(path))


def verify_stack(
    stack: SoftwareStack,
    *,
    device: str,
    device_id: str | None = None,
    environ: Mapping[str, str] | None = None,
    use_cache: bool = True,
    timeout: float = VERIFY_TIMEOUT_SECONDS,
) -> tuple[NativeCheck, list[str] | None]:
    """bitsandbytes' int8 matmul and, on a GPU, torch's arch list, from one child process.

    ``device`` is "cuda" or "cpu"; ``device_id`` (a GPU UUID) keys the int8 cache and
    pins the child to that GPU. Recent bitsandbytes imports fine even when its native
    library failed to load, so only a real matmul tells. The arch list is
    ``torch.cuda.get_arch_list()`` of the installed build (None on a CPU or CPU-only torch).
    """
    env = dict(os.environ if environ is None else environ)
    want_int8 = bool(stack.packages.get("bitsandbytes"))
    want_arch = device == "cuda" and bool(stack.packages.get("torch")) and bool(stack.torch_cuda)
    int8_file = _cache_dir(env) / f"bnb-{_cache_key(stack, device, device_id)}.json"
    arch_file = _cache_dir(env) / f"torch-{_arch_cache_key(stack)}.json"
    check: NativeCheck | None = None
    arch: list[str] | None = None
    if use_cache and want_int8:
        cached = _read_json(int8_file)
        if (
            cached
            and isinstance(cached.get("state"), str)
            and isinstance(cached.get("detail"), str)
        ):
            check = NativeCheck(
                state=str(cached["state"]), detail=str(cached["detail"]), cached=True, device=device
            )
    if use_cache and want_arch:
        arch = _arch_list_from(_read_json(arch_file))
    run_int8 = want_int8 and check is None
    run_arch = want_arch and arch is None
    if run_int8 or run_arch:
        ran, arch_read = _run_child(env, device, device_id, run_int8, run_arch, timeout)
        if run_int8 and ran is not None:
            check = ran
            _write_json(int8_file, {"state": ran.state, "detail": ran.detail})
        if run_arch and arch_read is not None:
            arch = arch_read
            _write_json(arch_file, {"arch_list": arch_read})
    if not want_int8:
        check = NativeCheck(state="failed", detail="bitsandbytes is not installed", device=device)
    assert check is not None
    return check, arch


def _run_child(
    env: dict[str, str],
    device: str,
    device_id: str | None,
    want_int8: bool,
    want_arch: bool,
    timeout: float,
) -> tuple[NativeCheck | None, list[str] | None]:
    if device_id and device == "cuda" and device_id.startswith(("GPU-", "MIG-")):
        env["CUDA_VISIBLE_DEVICES"] = device_id
    flags = ["1" if want_int8 else "0", "1" if want_arch else "0"]
    started = time.perf_counter()
    try:
        completed = subprocess.run(
            [sys.executable, "-c", _CHILD_CHECK, device, *flags],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return NativeCheck(
            state="failed", detail=f"int8 check timed out after {timeout:.0f} s", device=device
        ), None
    except OSError as error:
        return NativeCheck(
            state="failed", detail=f"cannot start Python: {error}", device=device
        ), None
    elapsed = time.perf_counter() - started
    marker = [ln for ln in completed.stdout.splitlines() if ln.startswith("GPUINFER_RESULT ")]
    if not marker:
        tail = (completed.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return NativeCheck(
            state="failed",
            detail=f"int8 check exited with code {completed.returncode}: {tail}",
            device=device,
        ), None
    data = json.loads(marker[-1].removeprefix("GPUINFER_RESULT "))
    check = NativeCheck(
        state=data["state"], detail=f"{data['detail']} ({elapsed:.1f} s)", device=device
    )
    return (check if want_int8 else None), _arch_list_from(data)


def verify_bitsandbytes(
    stack: SoftwareStack,
    *,
    device: str,
    device_id: str | None = None,
    environ: Mapping[str, str] | None = None,
    use_cache: bool = True,
    timeout: float = VERIFY_TIMEOUT_SECONDS,
) -> NativeCheck:
    """Run one tiny int8 matmul through bitsandbytes in a child process (see verify_stack)."""
    if not stack.packages.get("bitsandbytes"):
        return NativeCheck(state="failed", detail="bitsandbytes is not installed", device=device)
    check, _ = verify_stack(
        stack,
        device=device,
        device_id=device_id,
        environ=environ,
        use_cache=use_cache,
        timeout=timeout,
    )
    return check

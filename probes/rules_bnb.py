"""Rule rows for bitsandbytes (int8 = LLM.int8, nf4 = 4-bit): floors, binaries, int8 paths."""

from __future__ import annotations

from packaging.version import Version

from pytest_gpuinfer.probes import builds
from pytest_gpuinfer.probes.facts import INT8_TENSOR_CORES_FROM, Facts, UnknownFact
from pytest_gpuinfer.probes.report import Status
from pytest_gpuinfer.probes.rule import QUANTIZED, Rule, always
from pytest_gpuinfer.probes.rules_floors import covered

INT8 = frozenset({"int8"})
NF4 = frozenset({"nf4"})

BNB_CPU_BACKEND_FROM = "0.46.0"
"""The first bitsandbytes with a CPU backend (int8 and nf4 without a GPU)."""
NF4_MIN_BNB = "0.39.0"
"""bitsandbytes' first 4-bit release. transformers' own floors (rules_floors) speak for the
releases whose code checks one; this row covers the rest (4.53-4.57 check nothing)."""


def _bnb(f: Facts) -> Version:
    return f.version("bitsandbytes")


def _in_range(f: Facts, low: str, high: str | None = None) -> bool:
    """bitsandbytes installed, release >= low and < high (post releases count as theirs)."""
    if not f.has("bitsandbytes"):
        return False
    release = _bnb(f).release
    return release >= Version(low).release and (high is None or release < Version(high).release)


def _row(f: Facts) -> builds.BnbRelease:
    row = builds.bnb_release(_bnb(f))
    if row is None:
        raise UnknownFact(
            f"no wheel of {f.pkg('bitsandbytes')} was read for its CUDA libraries "
            f"({builds.BNB_DATA} covers {builds.bnb_covered_text()}): unconfirmed"
        )
    return row


def _read(f: Facts) -> bool:
    """bitsandbytes installed and its wheel read (closed-world-bitsandbytes speaks otherwise)."""
    return f.has("bitsandbytes") and builds.bnb_release(_bnb(f)) is not None


def _cuda(f: Facts) -> str:
    cuda = f.torch_cuda_text
    if cuda is None:
        raise UnknownFact("torch's CUDA build is not known")
    return cuda


def _library(f: Facts) -> builds.BnbLibrary | None:
    return builds.bnb_library_for(_row(f), _cuda(f), f.cc)


_NO_MATCH = {
    "cpu-fallback": "it then silently loads its CPU library",
    "error": "it then fails to load a native library",
    "nearest": "no library of the same CUDA major is left to fall back to",
}


def _library_missing(f: Facts) -> str:
    row = _row(f)
    lt = row.wants_cublaslt(f.cc)
    kind = "" if row.cublaslt_source is None else ("cuBLASLt " if lt else "*_nocublaslt ")
    libs = ", ".join(lib.cuda for lib in row.libraries if lib.cublaslt == lt) or "no CUDA version"
    then = _NO_MATCH[row.no_match]
    if row.no_match == "cpu-fallback" and not row.cpu_library:
        then = "it then falls back to its CPU library, which this wheel lacks: it fails to load"
    return (
        f"{f.pkg('bitsandbytes')} ships {kind}CUDA libraries for {libs}, none for CUDA "
        f"{_cuda(f)} ({f.torch_label}); {then} ({row.no_match_source})"
    )


def _library_covers(f: Facts) -> bool:
    lib = _library(f)
    if lib is None:
        return True  # bnb-library-for-cuda reports it
    return builds.coverage(lib.targets, f.cc) is not None


def _library_targets(f: Facts) -> str:
    lib = _library(f)
    assert lib is not None
    arch = f" ({f.gpu.architecture})" if f.gpu is not None and f.gpu.architecture else ""
    text = (
        f"{f.pkg('bitsandbytes')}'s {lib.file} targets {builds.targets_text(lib.targets)}, "
        f"nothing for {f.gpu_label}{arch}"
    )
    span = builds.bnb_releases_covering(f.cc)
    if span is not None:
        text += f"; bitsandbytes {span[0]}-{span[1]} ship code for it"
    return text


def _has_cublaslt_library(f: Facts) -> bool:
    lib = _library(f)
    return lib is not None and lib.cublaslt


def _nocublaslt_found(f: Facts) -> str:
    row = _row(f)
    lib = _library(f)
    digits = _cuda(f).replace(".", "")
    if lib is None:
        return (
            f"{f.pkg('bitsandbytes')} lacks libbitsandbytes_cuda{digits}.so (in {row.wheel}) "
            f"for {f.gpu_label}"
        )
    why = f" (its loader picks cuBLASLt by compute capability: {row.cublaslt_source})"
    return f"{f.pkg('bitsandbytes')} loads {lib.file} on {f.gpu_label}{why}"


BNB_RULES: tuple[Rule, ...] = (
    Rule(
        id="bnb-installed",
        modes=QUANTIZED,
        device="any",
        requirement="int8 and nf4 need bitsandbytes",
        otherwise=Status.UNSUPPORTED,
        source="HF Efficient Inference on a Single GPU (v4.29)",
        applies=always,
        holds=lambda f: f.has("bitsandbytes"),
        found=lambda f: "no bitsandbytes (pip install bitsandbytes)",
    ),
    Rule(
        id="seed-min-bitsandbytes",
        modes=INT8,
        device="any",
        requirement="LLM.int8 needs bitsandbytes >= 0.31.5",
        otherwise=Status.UNSUPPORTED,
        source="HF Efficient Inference on a Single GPU (v4.29)",
        applies=lambda f: f.has("bitsandbytes"),
        holds=lambda f: f.at_least("bitsandbytes", "0.31.5"),
        found=lambda f: f.pkg("bitsandbytes"),
    ),
    Rule(
        id="nf4-min-bitsandbytes",
        modes=NF4,
        device="any",
        requirement=f"4-bit (nf4) needs bitsandbytes >= {NF4_MIN_BNB} and transformers >= 4.30",
        otherwise=Status.UNSUPPORTED,
        source="transformers 4.30 release notes (QLoRA / load_in_4bit); 4.48 "
        "quantizer_bnb_4bit.py; bitsandbytes 0.39.0 changelog (4-bit matmul)",
        applies=lambda f: (
            f.has("bitsandbytes")
            and f.has("transformers")
            and not covered(f, "transformers", "bitsandbytes", "nf4")
        ),
        holds=lambda f: (
            f.at_least("bitsandbytes", NF4_MIN_BNB) and f.at_least("transformers", "4.30")
        ),
        found=lambda f: f"{f.pkg('bitsandbytes')}, {f.pkg('transformers')}",
    ),
    Rule(
        id="seed-min-accelerate",
        modes=QUANTIZED,
        device="any",
        requirement="int8 and nf4 need accelerate >= 0.12.0 (device_map loading); from "
        "transformers 4.38 its own ACCELERATE_MIN_VERSION (rules_floors) sets the floor",
        otherwise=Status.UNSUPPORTED,
        source="HF Efficient Inference on a Single GPU (v4.29); transformers v5 bnb quantizer",
        applies=lambda f: f.has("transformers"),
        holds=lambda f: (
            f.has("accelerate")
            and (
                covered(f, "transformers", "accelerate", "int8")
                or f.at_least("accelerate", "0.12.0")
            )
        ),
        found=lambda f: f.pkg("accelerate"),
    ),
    Rule(
        id="transformers-multibackend-cpu-bug",
        modes=QUANTIZED,
        device="cpu",
        requirement="on a CPU-only machine transformers 4.45-4.50 cannot load bitsandbytes "
        "models (its multi-backend check calls discard() on a frozenset)",
        otherwise=Status.UNSUPPORTED,
        source="transformers 4.45-4.50 integrations/bitsandbytes.py "
        "_validate_bnb_multi_backend_availability, fixed in 4.51; seen with 4.48.3 + "
        "bitsandbytes 0.50.2",
        applies=lambda f: f.has("bitsandbytes") and f.has("transformers"),
        holds=lambda f: not (Version("4.45") <= f.version("transformers") < Version("4.51")),
        found=lambda f: f"{f.pkg('transformers')} with {f.pkg('bitsandbytes')} and no GPU",
    ),
    # --- which native library loads, and whether it has code for the GPU ---------------------
    Rule(
        id="bnb-library-for-cuda",
        modes=QUANTIZED,
        device="cuda",
        requirement="bitsandbytes must ship a CUDA library for torch's CUDA version",
        otherwise=Status.UNSUPPORTED,
        source=f"bitsandbytes wheel contents and loader source, per release ({builds.BNB_DATA})",
        applies=lambda f: _read(f) and f.torch_cuda_text is not None,
        holds=lambda f: _library(f) is not None,
        found=_library_missing,
    ),
    Rule(
        id="bnb-library-covers-gpu",
        modes=QUANTIZED,
        device="cuda",
        requirement="the bitsandbytes CUDA library that loads must contain code for the GPU "
        "(SASS for its architecture, or PTX the driver can compile)",
        otherwise=Status.UNSUPPORTED,
        source=f"cuobjdump --list-elf/--list-ptx of each release's libraries ({builds.BNB_DATA})",
        applies=lambda f: _read(f) and f.torch_cuda_text is not None,
        holds=_library_covers,
        found=_library_targets,
    ),
    # --- LLM.int8's matmul, by version and GPU ------------------------------------------------
    Rule(
        id="bnb-0.36.0-no-cublaslt",
        modes=INT8,
        device="cuda",
        requirement="int8 with bitsandbytes < 0.37 needs the cuBLASLt library "
        "(libbitsandbytes_cudaXYZ.so); a *_nocublaslt library has no int8 matmul",
        otherwise=Status.UNSUPPORTED,
        source=f"wheel contents and loader source per release ({builds.BNB_DATA}); "
        "bitsandbytes 0.37.0 changelog",
        # GPUs without int8 tensor cores are bnb-lt-0.37-needs-turing's: one reason each.
        applies=lambda f: (
            _read(f)
            and f.below("bitsandbytes", "0.37")
            and f.torch_cuda_text is not None
            and f.has_int8_tensor_cores
        ),
        holds=_has_cublaslt_library,
        found=_nocublaslt_found,
    ),
    Rule(
        id="bnb-lt-0.37-needs-turing",
        modes=INT8,
        device="cuda",
        requirement="int8 with bitsandbytes < 0.37 needs compute capability >= "
        f"{INT8_TENSOR_CORES_FROM} with int8 tensor cores (Turing or newer; not GTX 16xx)",
        otherwise=Status.UNSUPPORTED,
        source="HF Efficient Inference on a Single GPU (v4.29); bitsandbytes 0.37.0 changelog",
        applies=lambda f: f.below("bitsandbytes", "0.37"),
        holds=lambda f: f.has_int8_tensor_cores,
        found=lambda f: f"{f.gpu_label} with {f.pkg('bitsandbytes')}",
    ),
    Rule(
        id="bnb-0.37-gtx16xx",
        modes=INT8,
        device="cuda",
        requirement="int8 on GTX 16xx (compute capability 7.5 without tensor cores) needs "
        "bitsandbytes >= 0.38.0; 0.37 sends it down the cuBLASLt int8 path",
        otherwise=Status.UNSUPPORTED,
        source="bitsandbytes commit 5e456be5 'Support 1650, 1660' (first in 0.38.0)",
        applies=lambda f: _in_range(f, "0.37.0", "0.38.0"),
        holds=lambda f: not f.is_gtx16,
        found=lambda f: f"{f.gpu_label} with {f.pkg('bitsandbytes')}",
    ),
    Rule(
        id="bnb-int8-16bit-fallback",
        modes=INT8,
        device="cuda",
        requirement=f"fast int8 needs int8 tensor cores (compute capability >= "
        f"{INT8_TENSOR_CORES_FROM}, not GTX 16xx); bitsandbytes 0.37-0.44 casts the int8 "
        "weights to 16-bit for the matmul without them",
        otherwise=Status.DEGRADED,
        source="bitsandbytes 0.37.0 changelog ('Int8 now supported on all GPUs'); "
        "autograd/_functions.py supports_igemmlt (0.38-0.44)",
        applies=lambda f: (
            _in_range(f, "0.37.0", "0.45.0")
            and not (f.is_gtx16 and _in_range(f, "0.37.0", "0.38.0"))
        ),
        holds=lambda f: f.has_int8_tensor_cores,
        found=lambda f: f"{f.gpu_label} with {f.pkg('bitsandbytes')}",
    ),
    Rule(
        id="bnb-int8-cublaslt-without-tensor-cores",
        modes=INT8,
        device="cuda",
        requirement=f"bitsandbytes >= 0.45 runs every int8 matmul through cuBLASLt's int8 GEMM "
        f"(no 16-bit fallback); without int8 tensor cores (compute capability < "
        f"{INT8_TENSOR_CORES_FROM}, GTX 16xx) no source confirms it runs, or how fast",
        otherwise=Status.DEGRADED,
        source="bitsandbytes 0.45.0 autograd/_functions.py MatMul8bitLt (int8_linear_matmul "
        "unconditionally); REFERENCE §8 open question",
        applies=lambda f: _in_range(f, "0.45.0"),
        holds=lambda f: f.has_int8_tensor_cores,
        found=lambda f: f"{f.gpu_label} with {f.pkg('bitsandbytes')}",
        confirmed=False,
    ),
    Rule(
        id="bnb-hopper-needs-0.45",
        modes=INT8,
        device="cuda",
        requirement="int8 on Hopper (compute capability 9.x) needs bitsandbytes >= 0.45.0 "
        "('cublasLt ran into an error!' before)",
        otherwise=Status.UNSUPPORTED,
        source="bitsandbytes issue #538; 0.45.0 release notes",
        applies=lambda f: f.has("bitsandbytes") and f.cc[0] == 9,
        holds=lambda f: f.at_least("bitsandbytes", "0.45.0"),
        found=lambda f: f"{f.gpu_label} with {f.pkg('bitsandbytes')}",
    ),
    # --- CPU backend --------------------------------------------------------------------------
    Rule(
        id="bnb-cpu-needs-0.46",
        modes=QUANTIZED,
        device="cpu",
        requirement=f"int8 and nf4 on a CPU need bitsandbytes >= {BNB_CPU_BACKEND_FROM} "
        "(its CPU backend)",
        otherwise=Status.UNSUPPORTED,
        source="bitsandbytes 0.46.0 bitsandbytes/backends/cpu/ops.py; REFERENCE §8",
        applies=lambda f: f.has("bitsandbytes"),
        holds=lambda f: f.at_least("bitsandbytes", BNB_CPU_BACKEND_FROM),
        found=lambda f: f"{f.pkg('bitsandbytes')} and no GPU",
    ),
    Rule(
        id="bnb-cpu-int8-needs-torch-2.6",
        modes=INT8,
        device="cpu",
        requirement="int8 on a CPU needs torch >= 2.6 (bitsandbytes' CPU int8 matmul is "
        "torch._int_mm, registered only from torch 2.6)",
        otherwise=Status.UNSUPPORTED,
        source="bitsandbytes 0.46.0 bitsandbytes/backends/cpu/ops.py",
        applies=lambda f: f.has("bitsandbytes") and f.has("torch"),
        holds=lambda f: f.version("torch").release >= (2, 6),
        found=lambda f: f"{f.pkg('torch')} and no GPU",
    ),
    Rule(
        id="bnb-native-check",
        modes=QUANTIZED,
        device="any",
        requirement="bitsandbytes' native library must run an int8 matmul",
        otherwise=Status.UNSUPPORTED,
        source="bitsandbytes >= 0.46 imports even when its library failed to load",
        applies=lambda f: (
            f.has("bitsandbytes") and f.software.bitsandbytes_native.state != "not-run"
        ),
        holds=lambda f: f.software.bitsandbytes_native.state == "passed",
        found=lambda f: f.software.bitsandbytes_native.detail,
    ),
)

"""The compatibility rules: one table of data, each row citing its source.

A rule names the modes it concerns, when it applies, the requirement that must hold, the
status when it does not, and its source. ``judge`` runs every row against the facts of
each GPU (or the CPU when there is none) and keeps the worst outcome per mode, with every
reason. The audit table, the plugin's skip reasons and docs/compatibility.md are all
rendered from these rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from packaging.version import Version

from pytest_gpuinfer.probes.architectures import (
    SDPA_BACKENDS,
)
from pytest_gpuinfer.probes.facts import INT8_TENSOR_CORES_FROM, Facts, UnknownFact
from pytest_gpuinfer.probes.hf_calls import (
    bettertransformer_usable,
    int8_loading_api,
    native_sdpa,
    plan_fastpath,
)
from pytest_gpuinfer.probes.modes import MODE_INFO, QUANTIZED_MODES, bnb_config_text
from pytest_gpuinfer.probes.report import (
    MODES,
    DriverInfo,
    Finding,
    GPUInfo,
    SoftwareStack,
    Status,
    Verdict,
)

QUANTIZED = QUANTIZED_MODES
ALL = frozenset(MODES)

# bitsandbytes 0.50 wheels: CUDA build -> the compute capabilities its kernels cover.
BNB_050_CUDA_BUILDS: tuple[
    tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]], ...
] = (
    # (cuda from, cuda to, cc from, cc to)
    ((11, 8), (12, 6), (6, 0), (9, 0)),
    ((12, 8), (12, 9), (7, 0), (12, 0)),
    ((13, 0), (13, 9), (7, 5), (12, 0)),
)

# CUDA toolkit major -> oldest compute capability it still compiles for.
CUDA_TOOLKIT_MIN_CC: dict[int, tuple[int, int]] = {11: (3, 5), 12: (5, 0), 13: (7, 5)}


@dataclass(frozen=True)
class Rule:
    id: str
    modes: frozenset[str]
    device: Literal["cuda", "cpu", "any"]
    requirement: str
    """What must hold, written for a person; the reason starts with it."""
    otherwise: Status
    source: str
    applies: Callable[[Facts], bool]
    holds: Callable[[Facts], bool]
    found: Callable[[Facts], str]

    def evaluate(self, facts: Facts) -> Finding | None:
        """None when the rule does not apply or its requirement holds."""
        try:
            if not self.applies(facts) or self.holds(facts):
                return None
            found = self.found(facts)
        except UnknownFact as unknown:
            return Finding(
                self.id, Status.UNKNOWN, f"{self.requirement}: unknown, because {unknown}"
            )
        return Finding(self.id, self.otherwise, f"{self.requirement}; found {found}")


def _always(_: Facts) -> bool:
    return True


def _bnb_build_covers(f: Facts) -> bool:
    cuda = f.torch_cuda
    if cuda is None:
        return True
    cc = f.cc
    return any(
        lo <= cuda <= hi and c_lo <= cc <= c_hi for lo, hi, c_lo, c_hi in BNB_050_CUDA_BUILDS
    )


def _driver_covers_torch(f: Facts) -> bool:
    cuda = f.torch_cuda
    if cuda is None:
        return True
    raw = f.driver.cuda_driver_version if f.driver else None
    if raw is None:
        why = f.driver.unknown.get("cuda_driver_version") if f.driver else None
        raise UnknownFact(why or "the driver's CUDA version was not read")
    major, _, _minor = raw.partition(".")
    # CUDA minor-version compatibility: a driver of the same major runs any minor.
    return int(major) >= cuda[0]


RULES: tuple[Rule, ...] = (
    # --- the stack every mode needs -------------------------------------------------------
    Rule(
        id="torch-installed",
        modes=ALL,
        device="any",
        requirement="torch must be installed",
        otherwise=Status.UNSUPPORTED,
        source="transformers requirements",
        applies=_always,
        holds=lambda f: f.has("torch"),
        found=lambda f: "no torch (pip install 'pytest-gpuinfer[hf]')",
    ),
    Rule(
        id="transformers-installed",
        modes=ALL,
        device="any",
        requirement="transformers must be installed",
        otherwise=Status.UNSUPPORTED,
        source="pytest-gpuinfer loads models through transformers",
        applies=_always,
        holds=lambda f: f.has("transformers"),
        found=lambda f: "no transformers (pip install 'pytest-gpuinfer[hf]')",
    ),
    Rule(
        id="torch-cuda-build",
        modes=ALL,
        device="cuda",
        requirement="a GPU needs a CUDA build of torch",
        otherwise=Status.UNSUPPORTED,
        source="PyTorch install matrix",
        applies=lambda f: f.has("torch"),
        holds=lambda f: not f.torch_is_cpu_build,
        found=lambda f: f"{f.pkg('torch')} (CPU-only build) with {f.gpu_label}",
    ),
    Rule(
        id="cuda-toolkit-covers-gpu",
        modes=ALL,
        device="cuda",
        requirement="torch's CUDA toolkit must still compile for the GPU "
        "(CUDA 12 needs compute capability >= 5.0, CUDA 13 >= 7.5)",
        otherwise=Status.UNSUPPORTED,
        source="CUDA 12.0 and 13.0 release notes (dropped Kepler; Maxwell, Pascal, Volta)",
        applies=lambda f: f.torch_cuda is not None and f.torch_cuda[0] in CUDA_TOOLKIT_MIN_CC,
        holds=lambda f: f.cc >= CUDA_TOOLKIT_MIN_CC[f.torch_cuda[0] if f.torch_cuda else 0],
        found=lambda f: f"torch built for CUDA {f.software.torch_cuda} on {f.gpu_label}",
    ),
    Rule(
        id="driver-covers-torch-cuda",
        modes=ALL,
        device="cuda",
        requirement="the NVIDIA driver must support the CUDA major version torch was built for",
        otherwise=Status.UNSUPPORTED,
        source="CUDA compatibility guide (minor-version compatibility)",
        applies=lambda f: not f.simulated and f.torch_cuda is not None,
        holds=_driver_covers_torch,
        found=lambda f: (
            f"driver supports CUDA {f.driver.cuda_driver_version if f.driver else '?'}, "
            f"torch built for CUDA {f.software.torch_cuda}"
        ),
    ),
    # --- reference precisions --------------------------------------------------------------
    Rule(
        id="fp16-tensor-cores",
        modes=frozenset({"fp16"}),
        device="cuda",
        requirement="fast fp16 needs tensor cores (compute capability >= 7.0)",
        otherwise=Status.DEGRADED,
        source="NVIDIA Volta whitepaper; REFERENCE §3",
        applies=_always,
        holds=lambda f: "fp16" in f.tensor_cores,
        found=lambda f: f"{f.gpu_label} without fp16 tensor cores",
    ),
    Rule(
        id="bf16-needs-ampere",
        modes=frozenset({"bf16"}),
        device="cuda",
        requirement="bf16 needs compute capability >= 8.0 (Ampere)",
        otherwise=Status.UNSUPPORTED,
        source="NVIDIA Ampere whitepaper; torch.cuda.is_bf16_supported() says True on "
        "Turing through emulation, so it is not asked",
        applies=_always,
        holds=lambda f: f.cc >= (8, 0),
        found=lambda f: f.gpu_label,
    ),
    Rule(
        id="fp16-on-cpu",
        modes=frozenset({"fp16"}),
        device="cpu",
        requirement="fp16 on a CPU runs, but through slow kernels; prefer fp32 or bf16",
        otherwise=Status.DEGRADED,
        source="PyTorch CPU kernels",
        applies=_always,
        holds=lambda f: False,
        found=lambda f: "a machine without a GPU",
    ),
    # --- bitsandbytes (int8 = LLM.int8, nf4 = 4-bit) ------------------------------------------
    Rule(
        id="bnb-installed",
        modes=QUANTIZED,
        device="any",
        requirement="int8 and nf4 need bitsandbytes",
        otherwise=Status.UNSUPPORTED,
        source="HF Efficient Inference on a Single GPU (v4.29)",
        applies=_always,
        holds=lambda f: f.has("bitsandbytes"),
        found=lambda f: "no bitsandbytes (pip install bitsandbytes)",
    ),
    Rule(
        id="seed-min-bitsandbytes",
        modes=frozenset({"int8"}),
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
        modes=frozenset({"nf4"}),
        device="any",
        requirement="4-bit (nf4) needs bitsandbytes >= 0.39.0 and transformers >= 4.30",
        otherwise=Status.UNSUPPORTED,
        source="transformers 4.30 release notes (QLoRA / load_in_4bit)",
        applies=lambda f: f.has("bitsandbytes") and f.has("transformers"),
        holds=lambda f: f.at_least("bitsandbytes", "0.39.0") and f.at_least("transformers", "4.30"),
        found=lambda f: f"{f.pkg('bitsandbytes')}, {f.pkg('transformers')}",
    ),
    Rule(
        id="seed-min-accelerate",
        modes=QUANTIZED,
        device="any",
        requirement="int8 and nf4 need accelerate >= 0.12.0 (device_map loading)",
        otherwise=Status.UNSUPPORTED,
        source="HF Efficient Inference on a Single GPU (v4.29); transformers v5 bnb quantizer",
        applies=lambda f: f.has("transformers"),
        holds=lambda f: f.has("accelerate") and f.at_least("accelerate", "0.12.0"),
        found=lambda f: f.pkg("accelerate"),
    ),
    Rule(
        id="transformers5-needs-bnb-0.46.1",
        modes=QUANTIZED,
        device="any",
        requirement="transformers >= 5 needs bitsandbytes >= 0.46.1",
        otherwise=Status.UNSUPPORTED,
        source="transformers 5 quantizers/quantizer_bnb_8bit.py",
        applies=lambda f: (
            f.has("bitsandbytes")
            and f.has("transformers")
            and f.at_least("transformers", "5.0.0.dev0")
        ),
        holds=lambda f: f.at_least("bitsandbytes", "0.46.1"),
        found=lambda f: f"{f.pkg('transformers')} with {f.pkg('bitsandbytes')}",
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
    Rule(
        id="bnb-lt-0.37-needs-turing",
        modes=frozenset({"int8"}),
        device="cuda",
        requirement="int8 with bitsandbytes < 0.37 needs compute capability >= "
        f"{INT8_TENSOR_CORES_FROM} with int8 "
        "tensor cores (Turing or newer; not GTX 16xx)",
        otherwise=Status.UNSUPPORTED,
        source="HF Efficient Inference on a Single GPU (v4.29); bitsandbytes 0.37.0 changelog",
        applies=lambda f: f.below("bitsandbytes", "0.37"),
        holds=lambda f: "int8" in f.tensor_cores,
        found=lambda f: f"{f.gpu_label} with {f.pkg('bitsandbytes')}",
    ),
    Rule(
        id="bnb-int8-without-tensor-cores",
        modes=frozenset({"int8"}),
        device="cuda",
        requirement="fast int8 needs int8 tensor cores (compute capability >= "
        f"{INT8_TENSOR_CORES_FROM}); "
        "bitsandbytes >= 0.37 falls back to a slow path without them",
        otherwise=Status.DEGRADED,
        source="bitsandbytes 0.37.0 changelog; bitsandbytes docs (cc 6.0-7.4 disputed)",
        applies=lambda f: f.has("bitsandbytes") and not f.below("bitsandbytes", "0.37"),
        holds=lambda f: "int8" in f.tensor_cores,
        found=lambda f: f"{f.gpu_label}",
    ),
    Rule(
        id="bnb-hopper-needs-0.45",
        modes=frozenset({"int8"}),
        device="cuda",
        requirement="int8 on Hopper or newer (compute capability >= 9.0) needs bitsandbytes "
        ">= 0.45.0 ('cublasLt ran into an error!' before)",
        otherwise=Status.UNSUPPORTED,
        source="bitsandbytes issue #538; 0.45.0 release notes",
        applies=lambda f: f.has("bitsandbytes") and f.cc >= (9, 0),
        holds=lambda f: f.at_least("bitsandbytes", "0.45.0"),
        found=lambda f: f"{f.gpu_label} with {f.pkg('bitsandbytes')}",
    ),
    Rule(
        id="bnb-0.48-min-sm60",
        modes=QUANTIZED,
        device="cuda",
        requirement="bitsandbytes >= 0.48 needs compute capability >= 6.0 (Pascal)",
        otherwise=Status.UNSUPPORTED,
        source="bitsandbytes 0.48.0 release notes",
        applies=lambda f: f.has("bitsandbytes") and f.at_least("bitsandbytes", "0.48.0"),
        holds=lambda f: f.cc >= (6, 0),
        found=lambda f: f"{f.gpu_label} with {f.pkg('bitsandbytes')}",
    ),
    Rule(
        id="bnb-wheel-covers-gpu",
        modes=QUANTIZED,
        device="cuda",
        requirement="bitsandbytes 0.50 ships a native library for torch's CUDA build and the "
        "GPU (CUDA 11.8-12.6: cc 6.0-9.0; 12.8: cc 7.0-12.0; 13.x: cc 7.5-12.0)",
        otherwise=Status.UNSUPPORTED,
        source="bitsandbytes 0.50 wheel contents",
        applies=lambda f: (
            f.has("bitsandbytes")
            and f.version("bitsandbytes").release[:2] == (0, 50)
            and f.torch_cuda is not None
        ),
        holds=_bnb_build_covers,
        found=lambda f: f"torch built for CUDA {f.software.torch_cuda} on {f.gpu_label}",
    ),
    Rule(
        id="bnb-cpu-needs-0.47",
        modes=QUANTIZED,
        device="cpu",
        requirement="int8 and nf4 on a CPU need bitsandbytes >= 0.47",
        otherwise=Status.UNSUPPORTED,
        source="bitsandbytes 0.47.0 release notes (CPU backend)",
        applies=lambda f: f.has("bitsandbytes"),
        holds=lambda f: f.at_least("bitsandbytes", "0.47.0"),
        found=lambda f: f"{f.pkg('bitsandbytes')} and no GPU",
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
    # --- fastpath (fused attention) -----------------------------------------------------------
    Rule(
        id="fastpath-needs-sdpa-or-bettertransformer",
        modes=frozenset({"fastpath"}),
        device="any",
        requirement="the fastpath needs native SDPA (transformers >= 4.36 with torch >= 2.1.1) "
        "or BetterTransformer (optimum < 2 with transformers < 4.49)",
        otherwise=Status.UNSUPPORTED,
        source="transformers modeling_utils.py; optimum PRs #2198, #2305",
        applies=lambda f: f.has("torch") and f.has("transformers"),
        holds=lambda f: native_sdpa(f) or bettertransformer_usable(f),
        found=lambda f: f"{f.pkg('transformers')}, {f.pkg('torch')}, {f.pkg('optimum')}",
    ),
    Rule(
        id="fastpath-fused-kernel",
        modes=frozenset({"fastpath"}),
        device="cuda",
        requirement="fused SDPA kernels need compute capability >= 5.0 (memory-efficient) "
        "or >= 8.0 (flash, cuDNN); below that SDPA runs its math kernel",
        otherwise=Status.DEGRADED,
        source="PyTorch sdp_utils (PLATFORM_SUPPORTS_FLASH_ATTENTION = SM80OrLater)",
        applies=_always,
        holds=lambda f: f.cc >= SDPA_BACKENDS["memory-efficient"],
        found=lambda f: f.gpu_label,
    ),
)


def _resolves_to(mode: str, f: Facts) -> str | None:
    info = MODE_INFO[mode]
    if not info.quantized and info.dtype_fixed:
        return info.torch_dtype_name
    if mode == "int8" and int8_loading_api(f.software) == "load_in_8bit":
        return "from_pretrained(..., load_in_8bit=True)"
    if info.quantized:
        return f"quantization_config={bnb_config_text(mode)}"
    plan = plan_fastpath(f.software, f.gpu)
    if plan.implementation == "sdpa":
        kernels = ", ".join(plan.kernels) if plan.kernels else "math"
        text = f"attn_implementation='sdpa' ({kernels})"
    elif plan.implementation == "flash_attention_2":
        text = "attn_implementation='flash_attention_2'"
    else:
        text = "optimum BetterTransformer (to_bettertransformer)"
    return text


def _supported_message(mode: str, f: Facts) -> str:
    where = f.gpu_label
    if mode == "int8":
        cores = (
            "int8 tensor cores" if f.gpu and "int8" in _safe_tensor_cores(f) else "no tensor cores"
        )
        return f"LLM.int8 with {f.pkg('bitsandbytes')} on {where} ({cores})"
    if mode == "nf4":
        return f"4-bit nf4 with {f.pkg('bitsandbytes')} on {where}"
    if mode == "fastpath":
        return f"{plan_fastpath(f.software, f.gpu).reason}, on {where}"
    return f"{mode} on {where}"


def _safe_tensor_cores(f: Facts) -> tuple[str, ...]:
    try:
        return f.tensor_cores
    except UnknownFact:
        return ()


def _rules_for(mode: str, on_gpu: bool, rules: Iterable[Rule]) -> list[Rule]:
    wanted = ("cuda", "any") if on_gpu else ("cpu", "any")
    return [r for r in rules if mode in r.modes and r.device in wanted]


def judge_one(mode: str, facts: Facts, rules: Sequence[Rule] = RULES) -> Verdict:
    """The verdict for one mode on one GPU (or the CPU when facts.gpu is None)."""
    findings = [
        finding
        for rule in _rules_for(mode, facts.on_gpu, rules)
        if (finding := rule.evaluate(facts)) is not None
    ]
    status = max((f.status for f in findings), key=lambda s: s.rank, default=Status.SUPPORTED)
    if status is Status.SUPPORTED:
        findings.append(Finding("ok", Status.SUPPORTED, _supported_message(mode, facts)))
    resolves_to = _resolves_to(mode, facts) if status is not Status.UNSUPPORTED else None
    native = facts.software.bitsandbytes_native
    return Verdict(
        mode=mode,
        status=status,
        findings=findings,
        resolves_to=resolves_to,
        verified=mode in QUANTIZED and native.state == "passed",
        device="cuda" if facts.on_gpu else "cpu",
    )


def judge(
    gpus: Sequence[GPUInfo],
    software: SoftwareStack,
    *,
    modes: Sequence[str] = MODES,
    simulated: bool = False,
    driver: DriverInfo | None = None,
    rules: Sequence[Rule] = RULES,
) -> dict[str, Verdict]:
    """A verdict per mode: the worst over all GPUs (a model may be placed on any of them)."""
    targets: list[GPUInfo | None] = list(gpus) or [None]
    verdicts: dict[str, Verdict] = {}
    for mode in modes:
        per_target = [
            judge_one(mode, Facts(software, gpu, simulated, driver), rules) for gpu in targets
        ]
        worst = max(per_target, key=lambda v: v.status.rank)
        seen: set[str] = set()
        merged: list[Finding] = []
        for verdict in per_target:
            if verdict.status is not worst.status:
                continue
            for finding in verdict.findings:
                if finding.message not in seen:
                    seen.add(finding.message)
                    merged.append(finding)
        worst.findings = merged
        verdicts[mode] = worst
    return verdicts

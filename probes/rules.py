"""The compatibility rules engine: run the table of rows (each citing its source) per GPU.

The rows live by topic in ``rules_torch``, ``rules_floors`` (generated from
data/floors.json), ``rules_precision``, ``rules_bnb`` and ``rules_fastpath``; ``RULES``
joins them in display order. A rule names the modes it concerns, when it applies, the
requirement that must hold, the status when it does not, and its source. ``judge`` runs
every row against the facts of each GPU (or the CPU when there is none) and keeps the
worst outcome per mode, with every reason. The audit table, the plugin's skip reasons and
docs/compatibility.md are all rendered from these rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pytest_gpuinfer.probes.facts import Facts, UnknownFact
from pytest_gpuinfer.probes.hf_calls import (
    BETTERTRANSFORMER_REFUSED_MODEL_TYPES,
    int8_loading_api,
    plan_fastpath,
)
from pytest_gpuinfer.probes.modes import MODE_INFO, MODES, QUANTIZED_MODES, bnb_config_text
from pytest_gpuinfer.probes.report import (
    DriverInfo,
    Finding,
    GPUInfo,
    SoftwareStack,
    Status,
    Verdict,
)
from pytest_gpuinfer.probes.rule import Rule
from pytest_gpuinfer.probes.rules_bnb import BNB_RULES
from pytest_gpuinfer.probes.rules_coverage import COVERAGE_RULES
from pytest_gpuinfer.probes.rules_fastpath import FASTPATH_RULES
from pytest_gpuinfer.probes.rules_floors import FLOOR_RULES
from pytest_gpuinfer.probes.rules_platform import PLATFORM_RULES
from pytest_gpuinfer.probes.rules_precision import PRECISION_RULES
from pytest_gpuinfer.probes.rules_torch import TORCH_RULES

__all__ = [
    "BETTERTRANSFORMER_REFUSED_MODEL_TYPES",
    "MODES",
    "RULES",
    "Rule",
    "int8_loading_api",
    "judge",
    "judge_one",
    "plan_fastpath",
]

RULES: tuple[Rule, ...] = (
    *TORCH_RULES,
    *PLATFORM_RULES,
    *FLOOR_RULES,
    *PRECISION_RULES,
    *BNB_RULES,
    *FASTPATH_RULES,
    *COVERAGE_RULES,
)
"""Every rule, in the order the audit lists findings."""


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
    elif plan.implementation in ("flash_attention_2", "eager"):
        text = plan.call
    else:
        refused = ", ".join(sorted(BETTERTRANSFORMER_REFUSED_MODEL_TYPES))
        text = (
            "optimum BetterTransformer (to_bettertransformer) where optimum accepts the "
            f"architecture; attn_implementation='sdpa' for {refused}"
        )
    return text


def _supported_message(mode: str, f: Facts) -> str:
    where = f.gpu_label
    if mode == "int8":
        cores = (
            "int8 tensor cores" if f.gpu and "int8" in _safe_tensor_cores(f) else "no tensor cores"
        )
        text = f"LLM.int8 with {f.pkg('bitsandbytes')} on {where} ({cores})"
    elif mode == "nf4":
        text = f"4-bit nf4 with {f.pkg('bitsandbytes')} on {where}"
    elif mode == "fastpath":
        text = f"{plan_fastpath(f.software, f.gpu).reason}, on {where}"
    else:
        text = f"{mode} on {where}"
    return text + _build_note(f)


def _build_note(f: Facts) -> str:
    """Which torch build the GPU was judged against, when it is not simply the installed one."""
    try:
        build = f.torch_build
        if build is None or build.how == "installed":
            return ""
        return f"; judged against {f.torch_label}"
    except UnknownFact:
        return ""


def _safe_tensor_cores(f: Facts) -> tuple[str, ...]:
    try:
        return f.tensor_cores
    except UnknownFact:
        return ()


def _rules_for(mode: str, on_gpu: bool, rules: Iterable[Rule]) -> list[Rule]:
    wanted = ("cuda", "any") if on_gpu else ("cpu", "any")
    return [r for r in rules if mode in r.modes and r.device in wanted]


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(item for item in items if item))


def judge_one(mode: str, facts: Facts, rules: Sequence[Rule] = RULES) -> Verdict:
    """The verdict for one mode on one GPU (or the CPU when facts.gpu is None)."""
    from pytest_gpuinfer.probes.assumptions import assumptions_of

    findings: list[Finding] = []
    held: list[str] = []
    for rule in _rules_for(mode, facts.on_gpu, rules):
        finding = rule.evaluate(facts)
        if finding is not None:
            findings.append(finding)
        elif rule.applied(facts):
            held.append(rule.source)
    status = max((f.status for f in findings), key=lambda s: s.rank, default=Status.SUPPORTED)
    deciding = [f.source for f in findings if f.status is status]
    if status is Status.SUPPORTED:
        findings.append(Finding("ok", Status.SUPPORTED, _supported_message(mode, facts)))
        deciding = [*deciding, *held]
    resolves_to = _resolves_to(mode, facts) if status is not Status.UNSUPPORTED else None
    native = facts.software.bitsandbytes_native
    return Verdict(
        mode=mode,
        status=status,
        findings=findings,
        resolves_to=resolves_to,
        verified=mode in QUANTIZED_MODES and native.state == "passed",
        device="cuda" if facts.on_gpu else "cpu",
        assumptions=assumptions_of(mode, facts) if status is not Status.UNSUPPORTED else [],
        sources=_unique(deciding),
    )


def judge(
    gpus: Sequence[GPUInfo],
    software: SoftwareStack,
    *,
    modes: Sequence[str] = MODES,
    simulated: bool = False,
    driver: DriverInfo | None = None,
    rules: Sequence[Rule] = RULES,
    platform: str = "x86_64",
) -> dict[str, Verdict]:
    """A verdict per mode: the worst over all GPUs (a model may be placed on any of them)."""
    targets: list[GPUInfo | None] = list(gpus) or [None]
    verdicts: dict[str, Verdict] = {}
    for mode in modes:
        per_target = [
            judge_one(mode, Facts(software, gpu, simulated, driver, platform), rules)
            for gpu in targets
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
        worst.assumptions = _unique(
            a for v in per_target if v.status is worst.status for a in v.assumptions
        )
        worst.sources = _unique(
            s for v in per_target if v.status is worst.status for s in v.sources
        )
        verdicts[mode] = worst
    return verdicts

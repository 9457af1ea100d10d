"""Every rule of the table, at its boundary: one case just inside, one just outside."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pytest_gpuinfer.probes.architectures import architecture_name
from pytest_gpuinfer.probes.facts import Facts
from pytest_gpuinfer.probes.hf_calls import dtype_keyword, int8_loading_api, plan_fastpath
from pytest_gpuinfer.probes.report import DriverInfo, GPUInfo, NativeCheck, SoftwareStack, Status
from pytest_gpuinfer.probes.rule import UNCONFIRMED
from pytest_gpuinfer.probes.rules import RULES, judge
from pytest_gpuinfer.probes.rules_coverage import COVERAGE_RULES
from pytest_gpuinfer.probes.rules_floors import FLOOR_RULES
from pytest_gpuinfer.probes.rules_platform import PLATFORM_RULES

CURRENT = {
    "torch": "2.11.0",
    "transformers": "5.23.0",
    "accelerate": "1.15.0",
    "bitsandbytes": "0.50.2",
    "optimum": None,
    "flash-attn": None,
}


def stack(
    torch_cuda: str | None = "13.0", native: str = "not-run", **packages: str | None
) -> SoftwareStack:
    merged = dict(CURRENT)
    merged.update({k.replace("_", "-"): v for k, v in packages.items()})
    return SoftwareStack(
        python="3.12.3",
        platform="Linux-x86_64",
        packages=merged,
        torch_cuda=torch_cuda,
        bitsandbytes_native=NativeCheck(
            state=native, detail="ImportError: libcudart" if native == "failed" else "ok"
        ),
    )


def gpu(cc: tuple[int, int] | None, name: str = "Test GPU") -> GPUInfo:
    return GPUInfo(
        index=0,
        cuda_ordinal=0,
        name=name,
        compute_capability=cc,
        architecture=architecture_name(cc) if cc else None,
        total_memory_bytes=16 * 2**30,
        free_memory_bytes=15 * 2**30,
        unknown={} if cc else {"compute_capability": "NVML: GPU is lost"},
    )


@dataclass
class Case:
    rule: str
    fires: bool
    cc: tuple[int, int] | None = (9, 0)
    name: str = "Test GPU"
    torch_cuda: str | None = "13.0"
    native: str = "not-run"
    packages: dict[str, str | None] = field(default_factory=dict)
    driver_cuda: str | None = "13.0"
    simulated: bool = False
    arch_list: list[str] | None = None


CPU = None
DRIVER = DriverInfo(driver_version="580.65.06", cuda_driver_version="13.0")
GTX1660 = "NVIDIA GeForce GTX 1660"
OLD = {"transformers": "4.48.3"}


def bnb(version: str, **more: str | None) -> dict[str, str | None]:
    return {"bitsandbytes": version, **OLD, **more}


CASES = [
    Case("torch-installed", True, packages={"torch": None}),
    Case("torch-installed", False),
    Case("transformers-installed", True, packages={"transformers": None}),
    Case("transformers-installed", False),
    Case("torch-cuda-build", True, torch_cuda=None),
    Case("torch-cuda-build", False, torch_cuda="12.6"),
    # official builds (probes/builds.py): sm_37 last in cu118 of 2.7; cu128 lost sm_70 in 2.11
    Case("torch-build-covers-gpu", True, cc=(3, 7), torch_cuda="12.6", packages={"torch": "2.7.0"}),
    Case(
        "torch-build-covers-gpu", False, cc=(3, 7), torch_cuda="11.8", packages={"torch": "2.7.0"}
    ),
    Case(
        "torch-build-covers-gpu", True, cc=(7, 0), torch_cuda="12.8", packages={"torch": "2.11.0"}
    ),
    Case(
        "torch-build-covers-gpu", False, cc=(7, 0), torch_cuda="12.8", packages={"torch": "2.10.0"}
    ),
    Case("torch-build-covers-gpu", True, cc=(6, 0), torch_cuda="12.8", packages={"torch": "2.8.0"}),
    Case(
        "torch-build-covers-gpu", False, cc=(6, 1), torch_cuda="12.6", packages={"torch": "2.8.0"}
    ),
    Case(
        "torch-build-covers-gpu", True, cc=(10, 0), torch_cuda="12.6", packages={"torch": "2.6.0"}
    ),
    Case(
        "torch-build-covers-gpu", False, cc=(10, 0), torch_cuda="12.8", packages={"torch": "2.7.0"}
    ),
    Case("torch-build-covers-gpu", True, cc=(9, 0), arch_list=["sm_80", "sm_86"]),
    Case("torch-build-covers-gpu", False, cc=(8, 9), arch_list=["sm_80", "sm_86"]),
    # torch 2.13's cu130 build carries PTX for 12.0 (2.11's, measured on an H100, does not).
    Case("torch-build-ptx-only", True, cc=(13, 0), packages={"torch": "2.13.0"}),
    Case("torch-build-ptx-only", False, cc=(12, 0), packages={"torch": "2.13.0"}),
    Case("cuda-toolkit-covers-gpu", True, cc=(7, 0), torch_cuda="13.0"),
    Case("cuda-toolkit-covers-gpu", False, cc=(7, 5), torch_cuda="13.0"),
    Case("cuda-toolkit-covers-gpu", True, cc=(3, 7), torch_cuda="12.1"),
    Case("cuda-toolkit-covers-gpu", False, cc=(5, 0), torch_cuda="12.1"),
    Case("driver-covers-torch-cuda", True, torch_cuda="13.0", driver_cuda="12.8"),
    Case("driver-covers-torch-cuda", False, torch_cuda="12.8", driver_cuda="12.2"),
    # fp16 arithmetic per chip: CUDA C++ Programming Guide throughput table
    Case("half-gemm-needs-maxwell", True, cc=(3, 7)),
    Case("half-gemm-needs-maxwell", False, cc=(5, 0)),
    Case("fp16-arithmetic-rate", True, cc=(6, 1)),
    Case("fp16-arithmetic-rate", True, cc=(5, 2)),
    Case("fp16-arithmetic-rate", False, cc=(5, 3)),
    Case("fp16-arithmetic-rate", False, cc=(6, 0)),
    Case("fp16-arithmetic-rate", False, cc=(6, 2)),
    Case("fp16-arithmetic-rate", False, cc=(7, 5), name=GTX1660),
    Case("bf16-needs-ampere", True, cc=(7, 5)),
    Case("bf16-needs-ampere", False, cc=(8, 0)),
    Case("fp16-on-cpu", True, cc=CPU),
    Case("bnb-installed", True, packages={"bitsandbytes": None}),
    Case("bnb-installed", False),
    Case("seed-min-bitsandbytes", True, cc=(7, 5), packages={"bitsandbytes": "0.31.4"}),
    Case("seed-min-bitsandbytes", False, cc=(7, 5), packages={"bitsandbytes": "0.31.5"}),
    # transformers 4.53-4.57 check no 4-bit floor of their own (data/floors.json): this row
    # speaks there, and below transformers 4.30; the generated floors elsewhere.
    Case("nf4-min-bitsandbytes", True, packages=bnb("0.38.1", transformers="4.53.0")),
    Case("nf4-min-bitsandbytes", False, packages=bnb("0.39.0", transformers="4.53.0")),
    Case("nf4-min-bitsandbytes", True, packages=bnb("0.39.0", transformers="4.29.2")),
    Case("nf4-min-bitsandbytes", False, packages=bnb("0.38.1", transformers="4.30.0")),
    Case("seed-min-accelerate", True, packages={"accelerate": "0.11.0", "transformers": "4.37.2"}),
    Case("seed-min-accelerate", True, packages={"accelerate": None}),
    Case("seed-min-accelerate", False, packages={"accelerate": "0.12.0", "transformers": "4.37.2"}),
    Case("seed-min-accelerate", False, packages={"accelerate": "0.11.0"}),
    Case("transformers-multibackend-cpu-bug", True, cc=CPU, packages={"transformers": "4.48.3"}),
    Case("transformers-multibackend-cpu-bug", True, cc=CPU, packages={"transformers": "4.45.0"}),
    Case("transformers-multibackend-cpu-bug", False, cc=CPU, packages={"transformers": "4.51.0"}),
    Case("transformers-multibackend-cpu-bug", False, cc=CPU, packages={"transformers": "4.44.2"}),
    # which CUDA libraries each bitsandbytes ships (build workflows per tag)
    Case("bnb-library-for-cuda", True, torch_cuda="12.6", packages=bnb("0.44.1")),
    Case("bnb-library-for-cuda", False, torch_cuda="12.6", packages=bnb("0.45.0")),
    Case("bnb-library-for-cuda", True, torch_cuda="12.8", packages=bnb("0.45.2")),
    Case("bnb-library-for-cuda", False, torch_cuda="12.8", packages=bnb("0.45.3")),
    Case("bnb-library-for-cuda", True, torch_cuda="13.0", packages=bnb("0.47.0")),
    Case("bnb-library-for-cuda", False, torch_cuda="13.0", packages=bnb("0.48.0")),
    Case("bnb-library-for-cuda", True, torch_cuda="13.2", packages=bnb("0.49.2")),
    Case("bnb-library-for-cuda", False, torch_cuda="12.9", packages={"bitsandbytes": "0.50.2"}),
    Case("bnb-library-for-cuda", True, torch_cuda="12.1", packages=bnb("0.36.0")),
    Case("bnb-library-for-cuda", False, torch_cuda="12.0", packages=bnb("0.36.0.post2")),
    # which GPUs each library has code for
    Case("bnb-library-covers-gpu", True, cc=(10, 0), torch_cuda="12.6", packages=bnb("0.45.2")),
    Case("bnb-library-covers-gpu", False, cc=(10, 0), torch_cuda="12.8", packages=bnb("0.45.3")),
    Case("bnb-library-covers-gpu", True, cc=(5, 2), torch_cuda="12.6", packages=bnb("0.48.0")),
    Case("bnb-library-covers-gpu", False, cc=(5, 2), torch_cuda="12.6", packages=bnb("0.47.0")),
    Case("bnb-library-covers-gpu", True, cc=(7, 0), torch_cuda="13.0"),
    Case("bnb-library-covers-gpu", False, cc=(7, 0), torch_cuda="12.8"),
    Case("bnb-library-covers-gpu", True, cc=(7, 0), torch_cuda="12.8", packages=bnb("0.46.1")),
    Case("bnb-library-covers-gpu", False, cc=(7, 0), torch_cuda="12.8", packages=bnb("0.47.0")),
    Case("bnb-library-covers-gpu", True, cc=(3, 7), torch_cuda="11.8", packages=bnb("0.40.0")),
    # sm_37 is only in the 11.0-11.7 *_nocublaslt libraries, last in 0.39.0 (cuobjdump data)
    Case("bnb-library-covers-gpu", False, cc=(3, 7), torch_cuda="11.7", packages=bnb("0.38.1")),
    Case("bnb-library-covers-gpu", True, cc=(3, 7), torch_cuda="11.8", packages=bnb("0.38.1")),
    Case("bnb-library-covers-gpu", False, cc=(3, 7), torch_cuda="11.7", packages=bnb("0.39.0")),
    Case("bnb-library-covers-gpu", True, cc=(3, 7), torch_cuda="11.7", packages=bnb("0.39.1")),
    # LLM.int8's matmul by version and GPU
    Case("bnb-0.36.0-no-cublaslt", True, cc=(7, 5), torch_cuda="11.8", packages=bnb("0.36.0")),
    Case(
        "bnb-0.36.0-no-cublaslt", False, cc=(7, 5), torch_cuda="11.8", packages=bnb("0.36.0.post2")
    ),
    # 0.31-0.35 load the cuBLASLt library only on cc 7.5, 8.0, 8.6 (cuda_setup/main.py)
    Case("bnb-0.36.0-no-cublaslt", True, cc=(8, 9), torch_cuda="11.8", packages=bnb("0.35.4")),
    Case("bnb-0.36.0-no-cublaslt", False, cc=(8, 6), torch_cuda="11.8", packages=bnb("0.35.4")),
    Case("bnb-lt-0.37-needs-turing", True, cc=(7, 0), torch_cuda="11.7", packages=bnb("0.36.0")),
    Case("bnb-lt-0.37-needs-turing", False, cc=(7, 5), torch_cuda="11.7", packages=bnb("0.36.0")),
    Case(
        "bnb-lt-0.37-needs-turing",
        True,
        cc=(7, 5),
        name="NVIDIA GeForce GTX 1650",
        torch_cuda="11.7",
        packages=bnb("0.36.0.post2"),
    ),
    Case("bnb-0.37-gtx16xx", True, cc=(7, 5), name=GTX1660, packages=bnb("0.37.2")),
    Case("bnb-0.37-gtx16xx", False, cc=(7, 5), name=GTX1660, packages=bnb("0.38.0")),
    Case("bnb-0.37-gtx16xx", False, cc=(7, 5), packages=bnb("0.37.2")),
    Case("bnb-int8-16bit-fallback", True, cc=(7, 0), packages=bnb("0.44.1")),
    Case("bnb-int8-16bit-fallback", False, cc=(7, 5), packages=bnb("0.44.1")),
    Case("bnb-int8-16bit-fallback", True, cc=(7, 5), name=GTX1660, packages=bnb("0.38.0")),
    Case("bnb-int8-16bit-fallback", False, cc=(7, 0), packages=bnb("0.45.0")),
    Case("bnb-int8-16bit-fallback", False, cc=(7, 0), packages=bnb("0.36.0")),
    Case("bnb-int8-cublaslt-without-tensor-cores", True, cc=(6, 0), packages=bnb("0.45.0")),
    Case("bnb-int8-cublaslt-without-tensor-cores", True, cc=(7, 5), name=GTX1660),
    Case("bnb-int8-cublaslt-without-tensor-cores", False, cc=(7, 5)),
    Case("bnb-int8-cublaslt-without-tensor-cores", False, cc=(6, 0), packages=bnb("0.44.1")),
    Case("bnb-hopper-needs-0.45", True, cc=(9, 0), torch_cuda="12.4", packages=bnb("0.44.1")),
    Case("bnb-hopper-needs-0.45", False, cc=(9, 0), torch_cuda="12.4", packages=bnb("0.45.0")),
    Case("bnb-hopper-needs-0.45", False, cc=(8, 9), torch_cuda="12.4", packages=bnb("0.44.1")),
    Case("bnb-hopper-needs-0.45", False, cc=(10, 0), torch_cuda="12.4", packages=bnb("0.44.1")),
    Case("bnb-cpu-needs-0.46", True, cc=CPU, packages=bnb("0.45.5", transformers="4.57.0")),
    Case("bnb-cpu-needs-0.46", False, cc=CPU, packages=bnb("0.46.0", transformers="4.57.0")),
    Case("bnb-cpu-int8-needs-torch-2.6", True, cc=CPU, packages={"torch": "2.5.1"}),
    Case("bnb-cpu-int8-needs-torch-2.6", False, cc=CPU, packages={"torch": "2.6.0"}),
    Case("bnb-native-check", True, native="failed"),
    Case("bnb-native-check", False, native="passed"),
    Case("bnb-native-check", False, native="not-run"),
    Case(
        "fastpath-needs-sdpa-or-bettertransformer",
        True,
        packages={"transformers": "4.35.2", "optimum": None},
    ),
    Case(
        "fastpath-needs-sdpa-or-bettertransformer",
        False,
        packages={"transformers": "4.35.2", "optimum": "1.16.0"},
    ),
    Case("fastpath-needs-sdpa-or-bettertransformer", False, packages={"transformers": "4.36.0"}),
    Case(
        "fastpath-needs-sdpa-or-bettertransformer",
        True,
        packages={"transformers": "4.35.2", "torch": "2.0.1", "optimum": "2.0.0"},
    ),
    Case("fastpath-fused-kernel", True, cc=(3, 7), torch_cuda="11.7"),
    Case("fastpath-fused-kernel", False, cc=(5, 0), torch_cuda="11.7"),
]


def _ids(case: Case) -> str:
    where = "cpu" if case.cc is None else f"cc{case.cc[0]}.{case.cc[1]}"
    return f"{case.rule}-{'fires' if case.fires else 'holds'}-{where}-{len(case.packages)}"


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_rule_boundary(case: Case) -> None:
    (rule,) = [r for r in RULES if r.id == case.rule]
    software = stack(case.torch_cuda, case.native, **case.packages)
    software.torch_arch_list = case.arch_list
    facts = Facts(
        software,
        gpu(case.cc, case.name) if case.cc is not None else None,
        case.simulated,
        DriverInfo(driver_version="580.65.06", cuda_driver_version=case.driver_cuda),
    )
    finding = rule.evaluate(facts)
    if case.fires:
        assert finding is not None, f"{case.rule} should fire"
        assert finding.status is rule.otherwise, finding.message
        assert finding.message.startswith(rule.requirement if rule.confirmed else UNCONFIRMED)
        assert rule.requirement in finding.message
        assert "; found " in finding.message
    else:
        assert finding is None, finding


def test_every_rule_has_boundary_cases() -> None:
    fired = {c.rule for c in CASES if c.fires}
    held = {c.rule for c in CASES if not c.fires}
    # Each generated floor (rules_floors) is shown at its boundary in test_floors.py; the
    # closed-world rows in test_coverage.py and the platform rows in test_platform.py.
    elsewhere = {*FLOOR_RULES, *COVERAGE_RULES, *PLATFORM_RULES}
    ids = {r.id for r in RULES if r not in elsewhere}
    assert ids == fired, f"rules never shown to fire: {sorted(ids - fired)}"
    # fp16-on-cpu has no passing side: fp16 on a CPU is always degraded.
    assert ids - {"fp16-on-cpu"} == held, f"rules never shown to hold: {sorted(ids - held)}"


def test_rule_ids_are_unique_and_sourced() -> None:
    ids = [r.id for r in RULES]
    assert len(ids) == len(set(ids))
    assert all(r.source.strip() and r.requirement.strip() for r in RULES)


def test_unknown_compute_capability_gives_unknown_with_reason() -> None:
    driver = DriverInfo(driver_version="580.65.06", cuda_driver_version="13.0")
    verdicts = judge([gpu(None)], stack("13.0"), driver=driver)
    assert verdicts["bf16"].status is Status.UNKNOWN
    assert "unknown, because compute capability of Test GPU is unknown (NVML: GPU is lost)" in (
        verdicts["bf16"].reason
    )
    # Even fp32 is unknown: whether torch's CUDA 13 build covers the GPU depends on its cc.
    assert verdicts["fp32"].status is Status.UNKNOWN
    assert [f.rule_id for f in verdicts["fp32"].findings] == [
        "torch-build-covers-gpu",
        "cuda-toolkit-covers-gpu",
    ]


def test_skip_reason_names_requirement_and_what_was_found() -> None:
    verdicts = judge(
        [gpu((6, 0), "Tesla P100-PCIE-16GB")],
        stack("11.7", torch="2.0.1", bitsandbytes="0.36.0", transformers="4.29.2"),
        driver=DRIVER,
    )
    assert verdicts["int8"].status is Status.UNSUPPORTED
    assert (
        "int8 with bitsandbytes < 0.37 needs compute capability >= 7.5 with int8 tensor cores"
        in verdicts["int8"].reason
    )
    assert "found Tesla P100-PCIE-16GB (6.0) with bitsandbytes 0.36.0" in verdicts["int8"].reason


def test_worst_gpu_decides_on_a_mixed_machine() -> None:
    verdicts = judge([gpu((8, 0), "A100"), gpu((7, 0), "V100")], stack("12.6"), driver=DRIVER)
    assert verdicts["bf16"].status is Status.UNSUPPORTED
    assert "V100 (7.0)" in verdicts["bf16"].reason
    assert verdicts["fp16"].status is Status.SUPPORTED


def test_cpu_verdicts() -> None:
    verdicts = judge([], stack(None))
    assert {m: v.status for m, v in verdicts.items()} == {
        "fp32": Status.SUPPORTED,
        "fp16": Status.DEGRADED,
        "bf16": Status.SUPPORTED,
        "int8": Status.SUPPORTED,
        "nf4": Status.SUPPORTED,
        "fastpath": Status.SUPPORTED,
    }
    assert all(v.device == "cpu" for v in verdicts.values())


def test_verified_only_after_a_passing_native_check() -> None:
    assert judge([gpu((9, 0))], stack(native="passed"), driver=DRIVER)["int8"].verified
    assert not judge([gpu((9, 0))], stack(), driver=DRIVER)["int8"].verified
    failed = judge([gpu((9, 0))], stack(native="failed"), driver=DRIVER)["int8"]
    assert failed.status is Status.UNSUPPORTED
    assert "ImportError: libcudart" in failed.reason


@pytest.mark.parametrize(
    ("transformers", "api"),
    [
        ("4.29.2", "load_in_8bit"),
        ("4.30.0", "quantization_config"),
        ("5.23.0", "quantization_config"),
    ],
)
def test_int8_loading_api(transformers: str, api: str) -> None:
    assert int8_loading_api(stack(transformers=transformers)) == api


def test_int8_resolves_to_the_api_the_stack_accepts() -> None:
    legacy = stack("11.7", torch="2.0.1", transformers="4.29.2", bitsandbytes="0.38.0")
    old = judge([gpu((7, 5))], legacy, driver=DRIVER)
    assert old["int8"].resolves_to == "from_pretrained(..., load_in_8bit=True)"
    new = judge([gpu((7, 5))], stack("12.8"), driver=DRIVER)
    assert new["int8"].resolves_to == "quantization_config=BitsAndBytesConfig(load_in_8bit=True)"


def test_plan_fastpath() -> None:
    legacy = stack("12.4", transformers="4.48.3", optimum="1.24.0")
    assert plan_fastpath(legacy, gpu((8, 0)), "bert").implementation == "bettertransformer"
    refused = plan_fastpath(legacy, gpu((8, 0)), "llama")
    assert refused.implementation == "sdpa"
    assert "refuses model type 'llama'" in refused.reason
    assert plan_fastpath(stack("12.8"), gpu((8, 0))).kernels == (
        "flash",
        "cudnn",
        "memory-efficient",
    )
    assert plan_fastpath(stack("12.8"), gpu((7, 5))).kernels == ("memory-efficient",)
    flash = stack("12.8", flash_attn="2.8.3")
    assert plan_fastpath(flash, gpu((8, 0))).implementation == "flash_attention_2"
    assert plan_fastpath(flash, gpu((7, 5))).implementation == "sdpa"
    modern_optimum = stack("12.8", optimum="2.3.0")
    assert "needs optimum < 2" in plan_fastpath(modern_optimum, gpu((9, 0))).reason


@pytest.mark.parametrize(
    ("transformers", "keyword"),
    [
        ("4.48.3", "torch_dtype"),
        ("4.55.4", "torch_dtype"),
        ("4.56.0", "dtype"),
        ("5.23.0", "dtype"),
    ],
)
def test_dtype_keyword(transformers: str, keyword: str) -> None:
    assert dtype_keyword(transformers) == keyword

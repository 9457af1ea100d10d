"""Skip reasons read as sentences: units on memory, "has no tensor cores"."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pytest_gpuinfer.probes.probe import probe
from pytest_gpuinfer.probes.report import Report
from pytest_gpuinfer.requirements.check import evaluate
from pytest_gpuinfer.requirements.marker import parse


def reasons(report: Report, **mark: object) -> list[str]:
    return evaluate(parse([((), mark)]), report)


@pytest.fixture(scope="module")
def gtx1660() -> Report:
    return probe(profile="gtx1660")


@pytest.fixture(scope="module")
def no_gpu(gtx1660: Report) -> Report:
    return replace(gtx1660, gpus=[], profile=None, gpu_unavailable_reason="no driver")


def test_a_gpu_without_tensor_cores_has_none(gtx1660: Report) -> None:
    [reason] = reasons(gtx1660, tensor_cores=["fp16", "int8"])
    assert reason == (
        "needs tensor_cores fp16, int8; GPU 0 NVIDIA GeForce GTX 1660 (7.5) has no tensor cores"
    )


def test_missing_tensor_core_precisions_are_named() -> None:
    [reason] = reasons(probe(profile="t4"), tensor_cores=["bf16"])
    assert reason.endswith("has tensor cores for fp16, int8, int4 (missing bf16)")


@pytest.mark.parametrize(
    ("free_memory", "shown"),
    [(8, "8 B"), ("8", "8 B"), ("8GiB", "8GiB"), ("16GB", "16GB"), (2**31, "2.00 GiB")],
)
def test_memory_without_a_gpu_has_a_unit(no_gpu: Report, free_memory: object, shown: str) -> None:
    [reason] = reasons(no_gpu, free_memory=free_memory)
    assert reason == f"needs free_memory {shown}; found no GPU: no driver"


def test_memory_on_a_gpu_is_in_readable_bytes(gtx1660: Report) -> None:
    [reason] = reasons(gtx1660, total_memory="40GiB")
    assert reason == (
        "needs total_memory 40.00 GiB; found 6.00 GiB total on GPU 0 NVIDIA GeForce GTX 1660 (7.5)"
    )

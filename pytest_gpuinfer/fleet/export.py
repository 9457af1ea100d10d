"""Each collected test's hardware requirements as JSON, so CI can route tests to runners.

Written by ``--gpuinfer-requirements=PATH`` (with ``--collect-only`` it costs one
collection). Schema ``pytest-gpuinfer/requirements`` version 1, documented in
docs/fleet.md; a reader must check both ``schema`` and ``schema_version``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_gpuinfer.requirements.marker import Requirements, parse
from pytest_gpuinfer.schemas import REQUIREMENTS

EXPORT_SCHEMA = REQUIREMENTS.schema
EXPORT_SCHEMA_VERSION = REQUIREMENTS.version


@dataclass(frozen=True)
class CollectedTest:
    """One collected test as the plugin sees it at the end of collection."""

    nodeid: str
    mode: str | None
    """The test's ``inference_mode`` parameter, when it has one."""
    requirements: Requirements
    gpu_test: bool
    """Marked, or uses a fixture that loads a model (the plugin gates it)."""


def record_of(test: CollectedTest) -> dict[str, Any]:
    """One test's entry: the marker as written plus the figures a router needs."""
    req = test.requirements
    modes = [test.mode] if test.mode else list(req.modes)
    return {
        "nodeid": test.nodeid,
        "gpu_test": test.gpu_test,
        "mode": test.mode,
        "modes": modes,
        "gpus": req.gpus,
        "compute_capability": None
        if req.compute_capability is None
        else req.compute_capability.text,
        "free_memory_bytes": req.free_memory_bytes,
        "total_memory_bytes": req.total_memory_bytes,
        "memory_need_bytes": req.declared_memory_bytes,
        "tensor_cores": list(req.tensor_cores),
        "packages": dict(req.packages),
        "marker": req.to_dict(),
    }


def export(tests: Iterable[CollectedTest], *, modes: Iterable[str]) -> dict[str, Any]:
    """The whole export: schema stamp, the modes selected, summary figures, one entry a test."""
    records = [record_of(t) for t in tests]
    gpu = [r for r in records if r["gpu_test"]]
    needs = [r["memory_need_bytes"] for r in gpu if r["memory_need_bytes"] is not None]
    return {
        **REQUIREMENTS.stamp(),
        "pytest_gpuinfer": plugin_version(),
        "modes_selected": list(modes),
        "summary": {
            "tests": len(records),
            "gpu_tests": len(gpu),
            "gpu_tests_without_memory_need": len(gpu) - len(needs),
            "max_memory_need_bytes": max(needs) if needs else None,
        },
        "tests": records,
    }


def plugin_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("pytest-gpuinfer")
    except metadata.PackageNotFoundError:
        return None


def requirements_of_record(record: Mapping[str, Any]) -> Requirements:
    """The Requirements an exported entry was made from (its marker, parsed again)."""
    marker = record.get("marker") or {}
    return parse([((), marker)] if marker else [])


def load_export(path: Path) -> dict[str, Any]:
    """Read an export; InputError (one line) when it is not one or of another version."""
    import json

    from pytest_gpuinfer.probes.errors import InputError

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror}") from None
    except ValueError:
        raise InputError(f"{path} is not JSON; expected a --gpuinfer-requirements export") from None
    try:
        return dict(REQUIREMENTS.check(data, path))
    except ValueError as error:
        raise InputError(str(error)) from None

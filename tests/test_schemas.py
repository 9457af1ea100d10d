"""Every JSON writer's output validates against its schema file in pytest_gpuinfer/schemas/."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes import nvml_specs

from pytest_gpuinfer.cli.main import main
from pytest_gpuinfer.fleet.route import Routing
from pytest_gpuinfer.schemas import AUDIT_SCHEMA_FILE, FORMATS, SCHEMA_DIR, Format

jsonschema = pytest.importorskip("jsonschema", reason="the test extra installs jsonschema")
referencing = pytest.importorskip("referencing", reason="jsonschema's own dependency")

InstallNvml = Callable[[dict[str, Any] | None], None]

SUITE = """
import pytest

@pytest.mark.gpuinfer(modes=["int8", "fp16"], free_memory="6GiB")
def test_quantized(inference_mode):
    pass

@pytest.mark.gpuinfer(gpus=2)
def test_split():
    pass

def test_plain():
    pass
"""


def _validate(data: object, schema_file: str) -> None:
    resources = [
        (path.name, referencing.Resource.from_contents(json.loads(path.read_text())))
        for path in SCHEMA_DIR.glob("*.schema.json")
    ]
    registry = referencing.Registry().with_resources(resources)
    schema = json.loads((SCHEMA_DIR / schema_file).read_text())
    jsonschema.Draft202012Validator(schema, registry=registry).validate(data)


def _validate_format(data: object, fmt: Format) -> None:
    fmt.check(data, "output")  # the reader's own check agrees with the schema file
    _validate(data, fmt.file)


def test_every_format_has_a_valid_schema_file() -> None:
    files = {fmt.file for fmt in FORMATS} | {AUDIT_SCHEMA_FILE}
    assert files == {p.name for p in SCHEMA_DIR.glob("*.schema.json")}
    for name in files:
        jsonschema.Draft202012Validator.check_schema(json.loads((SCHEMA_DIR / name).read_text()))


def test_every_writer_validates(
    pytester: pytest.Pytester,
    fake_nvml: InstallNvml,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    from pytest_gpuinfer import schemas

    fake_nvml(nvml_specs.NO_DRIVER)
    pytester.makepyfile(test_suite=SUITE)
    report_path, export_path = tmp_path / "report.json", tmp_path / "req.json"
    pytester.runpytest(
        "--gpuinfer", "--gpuinfer-profile", "t4", "--gpuinfer-report", str(report_path)
    )
    pytester.runpytest("--gpuinfer", "--co", "-q", "--gpuinfer-requirements", str(export_path))
    report = json.loads(report_path.read_text())
    _validate_format(report, schemas.REPORT)
    _validate_format(json.loads(export_path.read_text()), schemas.REQUIREMENTS)

    audit_path = tmp_path / "audit.json"
    capsys.readouterr()
    assert main(["audit", "--profile", "a100", "--json"]) == 0
    audit_path.write_text(capsys.readouterr().out)
    _validate(json.loads(audit_path.read_text()), AUDIT_SCHEMA_FILE)

    main(["merge", "--json", "--no-fail-on-unrun", str(report_path), str(audit_path)])
    _validate_format(json.loads(capsys.readouterr().out), schemas.MERGE)

    out = tmp_path / "subsets"
    main(["route", str(export_path), "t4=t4", "--out", str(out)])
    capsys.readouterr()
    routing = json.loads((out / "routing.json").read_text())
    _validate_format(routing, schemas.ROUTING)
    assert Routing.from_dict(routing).to_dict() == routing

    assert main(["audit", "--modes", "int9", "--json"]) == 2
    _validate_format(json.loads(capsys.readouterr().out), schemas.ERROR)

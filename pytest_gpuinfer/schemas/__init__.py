"""The JSON formats pytest-gpuinfer writes: one ``Format`` each, its stamp, its reader's check."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).parent


@dataclass(frozen=True)
class Format:
    """One versioned JSON format: every document carries ``schema`` and ``schema_version``."""

    schema: str
    version: str
    what: str
    """How a user produces it, for messages ("a --gpuinfer-requirements export")."""
    file: str
    """The JSON Schema file beside this module."""

    def stamp(self) -> dict[str, str]:
        """The two keys every document of this format starts with."""
        return {"schema": self.schema, "schema_version": self.version}

    def check(self, data: object, source: object) -> Mapping[str, Any]:
        """``data`` if it is this format at this version and conforms to its schema file;
        else ValueError naming ``source`` and the first field that is wrong."""
        if not isinstance(data, Mapping) or data.get("schema") != self.schema:
            raise ValueError(f"{source} is not {self.what}")
        if data.get("schema_version") != self.version:
            raise ValueError(
                f"{source} has {self.schema} schema_version {data.get('schema_version')!r}; "
                f"expected {self.version!r}"
            )
        from pytest_gpuinfer.schemas.validate import first_error

        error = first_error(data, self.json_schema())
        if error is not None:
            raise ValueError(f"{source} is a damaged {self.schema} document: {error}")
        return data

    def json_schema(self) -> Mapping[str, Any]:
        from pytest_gpuinfer.schemas.validate import schema_file

        return schema_file(self.file)


REPORT = Format("pytest-gpuinfer/report", "2", "a --gpuinfer-report file", "report.schema.json")
"""The plugin's JSON report; 2 added ``machine`` (who ran it, for ``gpuinfer merge``)."""
REQUIREMENTS = Format(
    "pytest-gpuinfer/requirements",
    "1",
    "a --gpuinfer-requirements export",
    "requirements.schema.json",
)
MERGE = Format("pytest-gpuinfer/merge", "1", "a `gpuinfer merge --json` view", "merge.schema.json")
ROUTING = Format(
    "pytest-gpuinfer/routing", "1", "a `gpuinfer route` routing.json", "routing.schema.json"
)
ERROR = Format("pytest-gpuinfer/error", "1", "a `gpuinfer --json` error", "error.schema.json")
AUDIT = Format(
    "pytest-gpuinfer/audit", "1", "a `gpuinfer audit --json` report", "audit.schema.json"
)
"""`gpuinfer audit --json` (``probes.report.Report.to_dict``, which stamps it itself since the
probes import nothing above them; its reader is ``Report.from_dict``)."""
AUDIT_SCHEMA_FILE = AUDIT.file

SWEEP = Format(
    "pytest-gpuinfer/sweep", "1", "a `gpuinfer audit --sweep --json` view", "sweep.schema.json"
)
ENV = Format("pytest-gpuinfer/env", "1", "a `gpuinfer env --json` block", "env.schema.json")

FORMATS: tuple[Format, ...] = (REPORT, REQUIREMENTS, MERGE, ROUTING, ERROR, AUDIT, SWEEP, ENV)

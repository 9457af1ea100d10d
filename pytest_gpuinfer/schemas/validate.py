"""Checking a document against its schema file: the subset of JSON Schema our files use.

``type``, ``const``, ``enum``, ``required``, ``properties``, ``additionalProperties``,
``items`` and a ``$ref`` to another file beside this one: enough to name the first field
that is wrong ("tests[3].outcome 'exploded' is not one of ..."), without a dependency.
The tests check every writer's output against the files with ``jsonschema`` itself.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).parent

_TYPES: Mapping[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


@functools.cache
def schema_file(name: str) -> Mapping[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))
    return loaded


def _shown(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return "an object" if isinstance(value, dict) else "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is(value: object, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[kind])


def _where(path: str) -> str:
    return path or "the document"


def first_error(data: object, schema: Mapping[str, Any], path: str = "") -> str | None:
    """The first place ``data`` breaks ``schema``, as one phrase; None when it conforms."""
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return first_error(data, schema_file(ref), path)
    kinds = schema.get("type")
    if kinds is not None:
        allowed = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_is(data, kind) for kind in allowed):
            return f"{_where(path)} is {_shown(data)}; expected {' or '.join(allowed)}"
    if "const" in schema and data != schema["const"]:
        return f"{_where(path)} is {_shown(data)}; expected {schema['const']!r}"
    if "enum" in schema and data not in schema["enum"]:
        choices = ", ".join("null" if c is None else str(c) for c in schema["enum"])
        return f"{_where(path)} {_shown(data)} is not one of: {choices}"
    if isinstance(data, dict):
        for key in schema.get("required", ()):
            if key not in data:
                return f"{_where(path)} has no {key!r}"
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, value in data.items():
            child = f"{path}.{key}" if path else str(key)
            if key in properties:
                found = first_error(value, properties[key], child)
            elif isinstance(extra, Mapping):
                found = first_error(value, extra, child)
            elif extra is False:
                found = f"{_where(path)} has an unknown key {key!r}"
            else:
                found = None
            if found:
                return found
    if isinstance(data, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(data):
            found = first_error(item, schema["items"], f"{path}[{index}]")
            if found:
                return found
    return None

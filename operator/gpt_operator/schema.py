"""A small reading of Kubernetes structural schemas: structure check, defaulting and validation.

The API server prunes, defaults and validates a custom resource against the CRD's openAPIV3Schema before
the operator sees it. `python -m gpt_operator render` and the tests do the same here, offline, so a sample
that renders is one `kubectl apply` accepts (CEL rules excepted: spec.validate() mirrors those).
"""

from __future__ import annotations

import copy
import re
from datetime import date, datetime
from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}
_SCHEMA_KEYS = {
    "type", "description", "properties", "required", "items", "enum", "default", "minimum", "maximum",
    "minLength", "maxLength", "pattern", "minItems", "maxItems", "additionalProperties", "format", "nullable",
    "maxProperties",
    "x-kubernetes-validations", "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-map-type", "x-kubernetes-embedded-resource",
}  # fmt: skip


def structural_problems(schema: dict[str, Any], path: str = "") -> list[str]:
    """Why a schema is not structural (every node typed, no unknown keywords, defaults valid)."""
    problems = []
    unknown = set(schema) - _SCHEMA_KEYS
    if unknown:
        problems.append(f"{path or '<root>'}: unsupported keywords {sorted(unknown)}")
    untyped_ok = schema.get("x-kubernetes-int-or-string") or schema.get("x-kubernetes-preserve-unknown-fields")
    if "type" not in schema and not untyped_ok:
        problems.append(f"{path or '<root>'}: no type")
    if "properties" in schema and "additionalProperties" in schema:
        problems.append(f"{path}: properties and additionalProperties are exclusive")
    if "default" in schema:
        problems += [f"{path}: default {p}" for p in validation_problems(schema["default"], schema, path)]
    for key, sub in schema.get("properties", {}).items():
        problems += structural_problems(sub, f"{path}.{key}")
    if isinstance(schema.get("additionalProperties"), dict):
        problems += structural_problems(schema["additionalProperties"], f"{path}.*")
    if "items" in schema:
        problems += structural_problems(schema["items"], f"{path}[]")
    if schema.get("type") == "array" and "items" not in schema:
        problems.append(f"{path}: array without items")
    return problems


def apply_defaults(obj: Any, schema: dict[str, Any]) -> Any:
    """A copy of obj with the schema's defaults filled in, as the API server does on read and write."""
    obj = copy.deepcopy(obj)
    _default(obj, schema)
    return obj


def _default(obj: Any, schema: dict[str, Any]) -> None:
    if isinstance(obj, dict):
        for key, sub in schema.get("properties", {}).items():
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                _default(obj[key], sub)
        if isinstance(schema.get("additionalProperties"), dict):
            for value in obj.values():
                _default(value, schema["additionalProperties"])
    elif isinstance(obj, list) and "items" in schema:
        for item in obj:
            _default(item, schema["items"])


def validation_problems(obj: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Every way obj breaks the schema, as `path: message` lines (empty when valid)."""
    where = path or "<root>"
    if schema.get("x-kubernetes-int-or-string"):
        return [] if isinstance(obj, (int, str)) and not isinstance(obj, bool) else [f"{where}: must be int or string"]
    kind = schema.get("type")
    if kind is not None:
        ok = isinstance(obj, _TYPES[kind]) and not (kind in ("integer", "number") and isinstance(obj, bool))
        if not ok:
            return [f"{where}: must be {kind}, not {type(obj).__name__}"]
    problems: list[str] = []
    if "enum" in schema and obj not in schema["enum"]:
        problems.append(f"{where}: {obj!r} not one of {schema['enum']}")
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        if "minimum" in schema and obj < schema["minimum"]:
            problems.append(f"{where}: {obj} is below the minimum {schema['minimum']}")
        if "maximum" in schema and obj > schema["maximum"]:
            problems.append(f"{where}: {obj} is above the maximum {schema['maximum']}")
    if isinstance(obj, str):
        if len(obj) < schema.get("minLength", 0):
            problems.append(f"{where}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(obj) > schema["maxLength"]:
            problems.append(f"{where}: longer than {schema['maxLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], obj):
            problems.append(f"{where}: {obj!r} does not match {schema['pattern']}")
        problems += _format_problems(obj, schema.get("format"), where)
    if isinstance(obj, list):
        if len(obj) < schema.get("minItems", 0):
            problems.append(f"{where}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(obj) > schema["maxItems"]:
            problems.append(f"{where}: more than {schema['maxItems']} items")
        if schema.get("x-kubernetes-list-type") == "set" and len({repr(i) for i in obj}) != len(obj):
            problems.append(f"{where}: duplicate items in a set")
        for i, item in enumerate(obj):
            problems += validation_problems(item, schema.get("items", {}), f"{path}[{i}]")
    if isinstance(obj, dict):
        props = schema.get("properties", {})
        if "maxProperties" in schema and len(obj) > schema["maxProperties"]:
            problems.append(f"{where}: more than {schema['maxProperties']} properties")
        for key in schema.get("required", []):
            if key not in obj:
                problems.append(f"{where}: {key} is required")
        extra = schema.get("additionalProperties")
        for key, value in obj.items():
            if key in props:
                problems += validation_problems(value, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                problems += validation_problems(value, extra, f"{path}.{key}")
            elif props and not schema.get("x-kubernetes-preserve-unknown-fields"):
                problems.append(f"{path}.{key}: unknown field")
    return problems


def _format_problems(value: str, fmt: str | None, where: str) -> list[str]:
    try:
        if fmt == "date":
            date.fromisoformat(value)
        elif fmt == "date-time":
            datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return [f"{where}: {value!r} is not a {fmt}"]
    return []


def crd_version_schema(crd: dict[str, Any], version: str) -> dict[str, Any]:
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return v["schema"]["openAPIV3Schema"]
    raise KeyError(f"the CRD has no version {version}")

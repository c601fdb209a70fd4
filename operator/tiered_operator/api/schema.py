"""Turn a pydantic JSON schema into a Kubernetes *structural* OpenAPI v3 schema.

pydantic emits JSON Schema 2020-12; the API server accepts only the structural subset: every node has a type,
no $ref, no anyOf carrying types (except the int-or-string idiom), no uniqueItems, boolean exclusiveMinimum.
Each transformation below is small and pure so the unit tests can pin it down.
"""

from __future__ import annotations

import copy
from typing import Any

JSON = dict[str, Any]

_DROP_KEYS = frozenset({"title", "$defs", "discriminator"})


def structural_schema(schema: JSON) -> JSON:
    """The structural equivalent of `schema` (a pydantic `model_json_schema()` result), with $defs inlined."""
    defs: JSON = schema.get("$defs", {})
    return _convert(schema, defs, stack=())


def _resolve_ref(ref: str, defs: JSON) -> tuple[str, JSON]:
    prefix = "#/$defs/"
    if not ref.startswith(prefix):
        raise ValueError(f"unsupported $ref {ref!r}: only local #/$defs/ references are inlined")
    name = ref[len(prefix) :]
    return name, defs[name]


def _merge(base: JSON, overlay: JSON) -> JSON:
    """Overlay field-level keys (description, default, rules) on a type's schema; rule lists concatenate."""
    merged = dict(base)
    for key, value in overlay.items():
        if key == "x-kubernetes-validations" and key in merged:
            merged[key] = [*merged[key], *value]
        else:
            merged[key] = value
    return merged


def _is_null(node: Any) -> bool:
    return isinstance(node, dict) and node.get("type") == "null"


def _convert(node: Any, defs: JSON, stack: tuple[str, ...]) -> Any:
    if isinstance(node, list):
        return [_convert(item, defs, stack) for item in node]
    if not isinstance(node, dict):
        return node

    node = dict(node)

    # $ref (possibly with sibling keys such as description) -> inline copy of the definition.
    if "$ref" in node:
        name, target = _resolve_ref(node.pop("$ref"), defs)
        if name in stack:
            raise ValueError(f"recursive model {name!r} cannot be expressed in a structural schema")
        resolved = _convert(copy.deepcopy(target), defs, (*stack, name))
        return _ordered(_merge(resolved, _convert(node, defs, stack)))

    # pydantic wraps single refs with siblings in allOf on some versions.
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = node.pop("allOf")[0]
        return _ordered(_merge(_convert(inner, defs, stack), _convert(node, defs, stack)))

    # Optional[X]: anyOf [X, null] -> X (a nullable default is the same as no default).
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if not _is_null(o)]
        if len(options) < len(node["anyOf"]):
            node.pop("anyOf")
            if node.get("default", 0) is None:
                node.pop("default")
            if len(options) == 1:
                return _ordered(_merge(_convert(options[0], defs, stack), _convert(node, defs, stack)))
            node["anyOf"] = options
        node = _int_or_string(node)

    out: JSON = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key == "additionalProperties" and value is False:
            continue
        if key == "uniqueItems":
            if value:
                out["x-kubernetes-list-type"] = "set"
            continue
        if key == "const":
            out["enum"] = [value]
            continue
        if key == "properties":
            out[key] = {name: _convert(prop, defs, stack) for name, prop in value.items()}
            continue
        if key == "x-kubernetes-validations":
            out[key] = [{k: v[k] for k in ("rule", "message", "fieldPath", "reason") if k in v} for v in value]
            continue
        if key in ("default", "enum", "required", "examples"):
            out[key] = copy.deepcopy(value)
            continue
        out[key] = _convert(value, defs, stack)

    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), int | float) and not isinstance(out.get(bound), bool):
            out[plain] = out.pop(bound)
            out[bound] = True
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return _ordered(out)


_KEY_ORDER = ("type", "description", "format", "enum", "default", "required", "properties")


def _ordered(node: JSON) -> JSON:
    """Stable, readable key order for the generated YAML (type and description first)."""
    first = {k: node[k] for k in _KEY_ORDER if k in node}
    rest = {k: v for k, v in sorted(node.items()) if k not in first}
    return {**first, **rest}


def _int_or_string(node: JSON) -> JSON:
    """anyOf [integer, string(+constraints)] -> the `x-kubernetes-int-or-string` idiom."""
    options = node.get("anyOf", [])
    types = sorted(o.get("type", "") for o in options)
    if types != ["integer", "string"]:
        return node
    node = dict(node)
    node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    node["x-kubernetes-int-or-string"] = True
    for option in options:
        for key, value in option.items():
            if key != "type":
                node[key] = value
    return node


def iter_properties(schema: JSON, path: str = "") -> list[tuple[str, JSON]]:
    """Every property of a structural schema as (dotted path, schema); array items appear as `path[]`."""
    found: list[tuple[str, JSON]] = []
    for name, prop in schema.get("properties", {}).items():
        child = f"{path}.{name}" if path else name
        found.append((child, prop))
        found.extend(iter_properties(prop, child))
        items = prop.get("items")
        if isinstance(items, dict):
            found.extend(iter_properties(items, f"{child}[]"))
        extra = prop.get("additionalProperties")
        if isinstance(extra, dict):
            found.extend(iter_properties(extra, f"{child}{{}}"))
    return found


def structural_problems(schema: JSON, path: str = "<root>") -> list[str]:
    """What would make the API server reject `schema` as non-structural (a cheap local pre-check)."""
    problems: list[str] = []
    for banned in ("$ref", "$defs", "uniqueItems", "title", "const", "allOf", "oneOf"):
        if banned in schema:
            problems.append(f"{path}: has {banned}")
    if "anyOf" in schema:
        if not schema.get("x-kubernetes-int-or-string"):
            problems.append(f"{path}: anyOf outside the int-or-string idiom")
    elif "type" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        problems.append(f"{path}: no type")
    for name, prop in schema.get("properties", {}).items():
        problems.extend(structural_problems(prop, f"{path}.{name}"))
    if isinstance(schema.get("items"), dict):
        problems.extend(structural_problems(schema["items"], f"{path}[]"))
    if isinstance(schema.get("additionalProperties"), dict):
        problems.extend(structural_problems(schema["additionalProperties"], f"{path}{{}}"))
    return problems

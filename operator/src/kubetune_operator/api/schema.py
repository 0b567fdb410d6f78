"""From pydantic's JSON Schema to the structural OpenAPI schema a CRD needs.

pydantic's JSON Schema is close to what the API server wants, but a CRD needs a
*structural* OpenAPI v3 schema: no $ref, no `anyOf: [X, null]` for optionals,
boolean `exclusiveMinimum`, no `title`. This module performs exactly that
translation, so the models stay the single source of truth.
"""

from __future__ import annotations

from typing import Any

# Keys that carry over unchanged from JSON Schema to the CRD's OpenAPI schema.
_KEPT = {
    "type", "description", "default", "enum", "pattern", "format",
    "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems",
    "minProperties", "maxProperties", "nullable",
}


def _resolve(schema: dict, defs: dict) -> dict:
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        # A field's own rules (e.g. immutability) add to its type's rules.
        rules = target.get("x-kubernetes-validations", []) + schema.get("x-kubernetes-validations", [])
        if rules:
            merged["x-kubernetes-validations"] = rules
        return _resolve(merged, defs)
    return schema


def to_structural(schema: dict, defs: dict) -> dict:
    """Translate one pydantic JSON Schema node into a structural CRD schema node."""
    schema = _resolve(schema, defs)
    if schema.get("x-kubernetes-int-or-string"):
        out = {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}
        for key in ("pattern", "description"):
            if key in schema:
                out[key] = schema[key]
        return out
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express a union in a structural schema: {schema}")
        inner = {k: v for k, v in schema.items() if k != "anyOf"}
        if inner.get("default", 0) is None:
            inner.pop("default")
        return to_structural({**_resolve(options[0], defs), **inner}, defs)

    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _KEPT or key.startswith("x-kubernetes-"):
            out[key] = value
    if "const" in schema:
        out["enum"] = [schema["const"]]
    # JSON Schema 2020 has numeric exclusive bounds, OpenAPI v3 boolean flags.
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if exclusive in schema:
            out[bound] = schema[exclusive]
            out[exclusive] = True
    if "enum" in out and "type" not in out:
        out["type"] = "integer" if all(isinstance(v, int) for v in out["enum"]) else "string"
    if out.get("type") == "number" and all(isinstance(v, int) for v in out.get("enum", [1.5])):
        out["type"] = "integer"

    if "properties" in schema:
        out["type"] = "object"
        out["properties"] = {name: to_structural(sub, defs) for name, sub in schema["properties"].items()}
        if schema.get("required"):
            out["required"] = list(schema["required"])
    elif isinstance(schema.get("additionalProperties"), dict):
        out["type"] = "object"
        out["additionalProperties"] = to_structural(schema["additionalProperties"], defs)
    elif "patternProperties" in schema:
        # A map whose keys follow a pattern: structural schemas cannot constrain
        # keys, so the API server checks the values and the operator the keys.
        (values,) = schema["patternProperties"].values()
        out["type"] = "object"
        out["additionalProperties"] = to_structural(values, defs)
    if "items" in schema:
        out["items"] = to_structural(schema["items"], defs)
    # A default of {} or [] adds nothing the server would not do anyway, and a
    # default on a required field is meaningless.
    if out.get("default") in ({}, []):
        out.pop("default")
    return out


def model_schema(model) -> dict:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return to_structural(raw, raw.get("$defs", {}))

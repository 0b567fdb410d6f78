"""Generate the FineTuneJob CustomResourceDefinition from the pydantic models.

pydantic's JSON Schema is close to what the API server wants, but a CRD needs a
*structural* OpenAPI v3 schema: no $ref, no `anyOf: [X, null]` for optionals,
boolean `exclusiveMinimum`, no `title`. This module performs exactly that
translation, so the models stay the single source of truth.
"""

from __future__ import annotations

from typing import Any

from .job import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION
from .spec import FineTuneJobSpec
from .status import FineTuneJobStatus

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


PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Model", "type": "string", "jsonPath": ".spec.model.uri"},
    {"name": "Method", "type": "string", "jsonPath": ".spec.method"},
    {"name": "Progress", "type": "string", "jsonPath": ".status.progress.summary"},
    {"name": "Loss", "type": "number", "jsonPath": ".status.metrics.trainLoss"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def build_crd() -> dict:
    """The complete CRD object, as written to crds/finetunejob.yaml."""
    spec_schema = model_schema(FineTuneJobSpec)
    status_schema = model_schema(FineTuneJobStatus)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "annotations": {"kubetune.io/generated-by": "kubetune crd (from kubetune_operator.api)"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": ["kubetune", "all"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A fine-tuning job: base model + dataset + method, trained, checkpointed, reported and optionally served.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }

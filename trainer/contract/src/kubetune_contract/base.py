"""The base every API and config model shares: unknown fields are errors,
camelCase on the wire, and cross-field rules declared once (see `Rule`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel


@dataclass(frozen=True)
class Rule:
    """A cross-field rule, declared once: the API server evaluates `cel`
    (`x-kubernetes-validations`), Python evaluates `holds`; both refuse with
    `message`. `cel` is None for an invariant only the trainer config has (what
    the operator resolves before rendering); the CRD never sees those."""

    message: str
    holds: Callable[[Any], bool]
    cel: str | None = None
    field_path: str | None = None

    def as_validation(self) -> dict:
        out = {"rule": self.cel, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out


class ApiModel(BaseModel):
    """A strict, camelCase Kubernetes-style object.

    `extra="forbid"` turns a misspelt field into an error instead of a silent
    default; `populate_by_name` lets Python code use snake_case while manifests
    use camelCase. A subclass lists its cross-field `rules`; they become its
    schema's CEL validations and are checked on every validation.
    """

    model_config = ConfigDict(
        # Strict like the API server: "3" is not an integer, "yes" not a boolean.
        strict=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        validate_assignment=True,
        use_enum_values=True,
    )
    rules: ClassVar[tuple[Rule, ...]] = ()

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema, handler):
        schema = handler(core_schema)
        cel = [rule.as_validation() for rule in cls.rules if rule.cel]
        if cel:
            target = handler.resolve_ref_schema(schema)
            target["x-kubernetes-validations"] = cel + target.get("x-kubernetes-validations", [])
        return schema

    @model_validator(mode="after")
    def _check_rules(self):
        self.check_complete()
        for rule in type(self).rules:
            if not rule.holds(self):
                raise ValueError(rule.message)
        return self

    def check_complete(self) -> None:
        """Raise ValueError when the input left out what this model must be given
        (checked before the rules, which would otherwise judge defaults)."""

    def to_manifest(self) -> dict:
        """Serialise as a manifest would say it: camelCase, only what was set."""
        return self.model_dump(by_alias=True, exclude_unset=True, mode="json")


def cel_field(rule: str, message: str) -> dict:
    """A field-level CEL rule (`json_schema_extra` of one field)."""
    return {"x-kubernetes-validations": [{"rule": rule, "message": message}]}


# The kubelet expands `$(NAME)` in a container's command, args and env values
# with the pod's environment, Secrets included: a spec string that reaches one
# of them (vLLM's extra arguments, a model path, an S3 endpoint) must not carry it.
NO_EXPANSION_MESSAGE = "must not contain $( : the kubelet would expand $(NAME) with the pod's environment, Secrets included"
NO_EXPANSION_CEL = {"rule": "!self.contains('$(')", "message": NO_EXPANSION_MESSAGE}


def no_expansion(value: str | None) -> str | None:
    """Pydantic check of a string that reaches a command line or an env value."""
    if value is not None and "$(" in value:
        raise ValueError(f"{value!r} {NO_EXPANSION_MESSAGE}")
    return value


def no_expansion_field(**extra) -> dict:
    """`json_schema_extra` of such a string field (with any other extras)."""
    rules = extra.pop("x-kubernetes-validations", [])
    return {**extra, "x-kubernetes-validations": [NO_EXPANSION_CEL, *rules]}

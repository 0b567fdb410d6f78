"""The base every API model shares: unknown fields are errors, camelCase on the wire."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """A strict, camelCase Kubernetes-style object.

    `extra="forbid"` turns a misspelt field into an error instead of a silent
    default; `populate_by_name` lets Python code use snake_case while manifests
    use camelCase.
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

    def to_manifest(self) -> dict:
        """Serialise as a manifest would say it: camelCase, only what was set."""
        return self.model_dump(by_alias=True, exclude_unset=True, mode="json")

"""Turn pydantic's errors into the messages `kubetune validate` prints:
`path.to.field: what is wrong; what is valid`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError


@dataclass(frozen=True)
class Problem:
    path: str  # dotted camelCase path, e.g. spec.lora.r
    message: str  # what is wrong; what is valid
    line: int | None = None  # 1-based line in the source file, when known

    def render(self, source: str | None = None) -> str:
        where = ""
        if source and self.line:
            where = f"{source}:{self.line}: "
        elif source:
            where = f"{source}: "
        return f"{where}{self.path}: {self.message}" if self.path else f"{where}{self.message}"


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """The camelCase field names valid at `loc` (for unknown-field errors)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = next(
            (f for name, f in current.model_fields.items() if part in (name, f.alias)),
            None,
        )
        if field is None:
            return sorted(f.alias or n for n, f in current.model_fields.items())
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(f.alias or n for n, f in current.model_fields.items())
    return None


def _model_in(annotation: Any) -> Any:
    """The BaseModel inside Optional[...] / list[...] annotations, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _message(error: dict, model: type[BaseModel]) -> str:
    kind = error["type"]
    ctx = error.get("ctx", {})
    given = error.get("input")
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        valid = _fields_at(model, tuple(error["loc"][:-1]))
        hint = f"; valid fields: {', '.join(valid)}" if valid else ""
        return f"unknown field{hint}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"])).removeprefix("Value error, ")
    if kind in ("literal_error", "enum"):
        return f"{given!r} is not allowed; valid values: {ctx.get('expected')}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bound = {"greater_than": "> ", "greater_than_equal": ">= ", "less_than": "< ", "less_than_equal": "<= "}[kind]
        limit = next(iter(ctx.values()))
        return f"{given!r} is out of range; must be {bound}{limit}"
    if kind == "string_pattern_mismatch":
        return f"{given!r} has an invalid format; must match {ctx.get('pattern')}"
    if kind in ("string_too_long", "too_long"):
        return f"too long; at most {ctx.get('max_length')} {'characters' if kind == 'string_too_long' else 'items'}"
    if kind in ("string_too_short", "too_short"):
        return f"too short; at least {ctx.get('min_length')} {'characters' if kind == 'string_too_short' else 'items'}"
    expected = {
        "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
        "float_type": "a number", "float_parsing": "a number",
        "bool_type": "true or false", "bool_parsing": "true or false",
        "string_type": "a string", "dict_type": "a mapping", "model_type": "a mapping",
        "model_attributes_type": "a mapping", "list_type": "a list",
    }.get(kind)
    if expected:
        return f"wrong type ({type(given).__name__}: {given!r}); must be {expected}"
    return error["msg"]


def _path(loc: tuple) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts[-1:] = [f"{parts[-1]}[{part}]"] if parts else [f"[{part}]"]
        elif part in ("int", "str", "function-after[check(), str]") or "[" in str(part):
            continue  # union branch names pydantic adds to locations
        else:
            parts.append(str(part))
    return ".".join(parts)


def problems_from(exc: ValidationError, model: type[BaseModel], prefix: tuple = ()) -> list[Problem]:
    """One Problem per distinct (path, message)."""
    seen: dict[tuple[str, str], Problem] = {}
    for error in exc.errors(include_url=False):
        loc = prefix + tuple(error["loc"])
        key = (_path(loc), _message(error, model))
        seen.setdefault(key, Problem(*key))
    problems = list(seen.values())
    # For an int-or-string field pydantic reports both branches; keep one.
    return problems

"""The search space of a sweep, against its template: what each parameter may
take, how a trial's values become a FineTuneJob spec, and which search spaces
are refused before any trial exists. Pure: no Optuna, no cluster."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from .errors import Problem, problems_from
from .spec import FineTuneJobSpec
from .sweep import SEARCHABLE, FineTuneSweepSpec, SweepParameter
from .sweep_objective import problems as objective_problems

# Spec sections that default to a whole object when left out, and what they resolve to.
_RESOLVED = {"lora": "resolved_lora", "quantization": "resolved_quantization"}


@dataclass(frozen=True)
class Dimension:
    """One parameter, with what its target field takes."""

    param: SweepParameter
    kind: str  # "integer", "number", "boolean" or "enum"
    enum: tuple | None

    @property
    def path(self) -> str:
        return self.param.path

    @property
    def integer(self) -> bool:
        """Sampled as integers: an integer field searched directly (a multiplier is any number)."""
        return self.kind == "integer" and self.param.multiple_of is None

    def grid(self) -> list:
        """Every value a grid tries (values, choices, or min..max by step)."""
        p = self.param
        if p.values is not None:
            return [int(v) if self.integer and float(v).is_integer() else v for v in p.values]
        if p.choices is not None:
            return list(p.choices)
        if p.step is None:
            return []
        count = int(math.floor((p.max - p.min) / p.step + 1e-9)) + 1
        points = [p.min + i * p.step for i in range(count)]
        return [int(round(v)) for v in points] if self.integer else [round(v, 12) for v in points]

    def candidates(self) -> list:
        """What validation tries: every grid value, or a range's two ends."""
        return self.grid() or [self.param.min, self.param.max]


def dimensions(spec: FineTuneSweepSpec) -> list[Dimension]:
    out = []
    for p in spec.parameters:
        schema = SEARCHABLE[p.path]
        kind = "enum" if "enum" in schema else schema["type"]
        out.append(Dimension(p, kind, tuple(schema["enum"]) if "enum" in schema else None))
    return out


# --------------------------------------------------------------------------- a trial's spec


def template_value(template: FineTuneJobSpec, path: str) -> Any:
    """A field's value in the template as a trial would get it (left-out sections resolved)."""
    node: Any = template
    for i, part in enumerate(path.split(".")):
        snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in part)
        node = getattr(node, _RESOLVED[snake]) if i == 0 and snake in _RESOLVED else getattr(node, snake, None)
        if node is None:
            return None
    return node


def field_value(dim: Dimension, value: Any, values: dict[str, Any], template: FineTuneJobSpec) -> Any:
    """What the field gets for a sampled value: booleans and enum words as the field takes
    them, integers as integers, a multiplier times the field it multiplies."""
    if dim.kind == "boolean":
        return {"true": True, "false": False}.get(str(value).lower(), value)
    if dim.kind == "enum":
        return next((e for e in dim.enum if str(e) == str(value)), value)
    if dim.param.multiple_of is not None:
        base = values.get(dim.param.multiple_of, template_value(template, dim.param.multiple_of))
        value = value * base
    if dim.kind == "integer":
        return int(round(value)) if float(value).is_integer() or dim.param.multiple_of is not None else value
    return float(value)


def trial_spec(spec: FineTuneSweepSpec, values: dict[str, Any]) -> dict:
    """The trial's FineTuneJob spec (manifest form): the template with each sampled value set."""
    dims = dimensions(spec)
    # Multipliers read the value they multiply, so plain values are set first.
    plain = {d.path: field_value(d, values[d.path], {}, spec.template) for d in dims if d.param.multiple_of is None}
    derived = {d.path: field_value(d, values[d.path], plain, spec.template) for d in dims if d.param.multiple_of is not None}
    out = copy.deepcopy(spec.template.to_manifest())
    for path, value in {**plain, **derived}.items():
        *parents, last = path.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def shown(values: dict[str, Any]) -> dict[str, str]:
    """The values as a trials table shows them."""
    return {path: (f"{v:.4g}" if isinstance(v, float) else str(v)) for path, v in values.items()}


# --------------------------------------------------------------------------- refused up front


def problems(spec: FineTuneSweepSpec) -> list[Problem]:
    """Every way this search space is wrong for its template, each naming the field:
    a value the field cannot take, a value that makes the trial's spec invalid, an
    objective the template does not compute, pruning without evaluations."""
    found = _objective_problems(spec)
    dims = dimensions(spec)
    for i, dim in enumerate(dims):
        found += _kind_problems(i, dim)
    if found:
        return found
    for i, dim in enumerate(dims):
        found += _value_problems(spec, dims, i, dim)
    return found


def _objective_problems(spec: FineTuneSweepSpec) -> list[Problem]:
    out = objective_problems(spec)
    if spec.pruning is not None and spec.template.training.eval_every_steps is None:
        out.append(Problem("spec.pruning", "pruning compares trials at their evaluations during training: set template.training.evalEverySteps"))
    return out


def _kind_problems(i: int, dim: Dimension) -> list[Problem]:
    p, where = dim.param, f"spec.parameters[{i}]"
    if dim.kind in ("enum", "boolean") and p.choices is None:
        words = ", ".join(str(e) for e in dim.enum) if dim.enum else "true, false"
        return [Problem(f"{where}.path", f"{p.path} takes one of {words}: give them as choices")]
    if dim.kind in ("integer", "number") and p.choices is not None:
        return [Problem(f"{where}.choices", f"{p.path} takes a number: give values or min and max")]
    if dim.kind == "enum" and any(str(c) not in {str(e) for e in dim.enum} for c in p.choices):
        return [Problem(f"{where}.choices", f"{p.path} takes one of {', '.join(str(e) for e in dim.enum)}")]
    if dim.kind == "boolean" and any(c.lower() not in ("true", "false") for c in p.choices):
        return [Problem(f"{where}.choices", f"{p.path} is a switch: choices are true and false")]
    if p.multiple_of is not None and SEARCHABLE[p.multiple_of].get("type") not in ("integer", "number"):
        return [Problem(f"{where}.multipleOf", f"{p.multiple_of} is not a number to multiply")]
    if dim.integer and p.values is not None and any(not float(v).is_integer() for v in p.values):
        return [Problem(f"{where}.values", f"{p.path} takes whole numbers")]
    return []


def _value_problems(spec: FineTuneSweepSpec, dims: list[Dimension], i: int, dim: Dimension) -> list[Problem]:
    """Each candidate of this dimension, the others at their first candidate, as a whole FineTuneJob."""
    base = {d.path: d.candidates()[0] for d in dims}
    for j, value in enumerate(dim.candidates()):
        try:
            FineTuneJobSpec.model_validate(trial_spec(spec, {**base, dim.path: value}), by_alias=True, by_name=False)
        except ValidationError as exc:
            first = problems_from(exc, FineTuneJobSpec, ("spec", "template"))[0]
            return [Problem(f"spec.parameters[{i}].{_where(dim, j)}", f"{value!r} makes an invalid trial: {first.path}: {first.message}")]
    return []


def _where(dim: Dimension, j: int) -> str:
    p = dim.param
    if p.values is not None:
        return f"values[{j}]"
    if p.choices is not None:
        return f"choices[{j}]"
    return ("min", "max")[j] if p.step is None else "step"
